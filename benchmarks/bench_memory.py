"""Peak memory of one training step per config × memory knob, from XLA's buffer assignment.

    python benchmarks/bench_memory.py [--configs cifar10_ncsnpp,cifar10_ddpmpp,digits]
        [--variants baseline,bf16,remat,bf16+remat,accum2,accum4] [--batch N] [--out F]

Compiles (never runs) `training.train_step` on one device with the state donated, as training
does, for a per-device batch of ``--batch`` examples (default: 16 for the CIFAR-10 configs, the
paper's 128 over 8 accelerators, and 64 for ``digits``), and reports XLA's
`memory_analysis()`: peak = temporaries + arguments + outputs − aliased
(`common.compiled_memory`). Variants: ``baseline`` (the config as shipped), ``bf16``
(``model.dtype = "bfloat16"``: bfloat16 compute, float32 parameters and optimizer state),
``remat`` (``model.remat``: block activations recomputed in the backward pass), ``bf16+remat``,
and ``accumK`` (``grad_accum_steps = K``: K micro-batches of batch/K, gradients summed in a scan).
Without ``--variants`` the full-size CIFAR-10 networks get a subset (`DEFAULT_VARIANTS`).

XLA's LLVM code generation is skipped unless ``--full_compile`` (``xla_backend_optimization_level``
0): it does not change buffer assignment, and it is about half of a CPU compile's time.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from score_sde_jax import models, training
from score_sde_jax.configs import digits  # noqa: E402
from score_sde_jax.configs.ve import cifar10_ncsnpp_continuous  # noqa: E402
from score_sde_jax.configs.vp import cifar10_ddpmpp_continuous  # noqa: E402
from score_sde_jax.data import pipeline

CONFIGS = {
    "cifar10_ncsnpp": (cifar10_ncsnpp_continuous.get_config, 16),
    "cifar10_ddpmpp": (cifar10_ddpmpp_continuous.get_config, 16),
    "digits": (digits.get_config, 64),
}
VARIANTS = {
    "baseline": {},
    "bf16": {"dtype": "bfloat16"},
    "remat": {"remat": True},
    "bf16+remat": {"dtype": "bfloat16", "remat": True},
    "accum2": {"grad_accum_steps": 2},
    "accum4": {"grad_accum_steps": 4},
}
# Without --variants: every variant for digits, fewer for the full-size CIFAR-10 networks, whose
# train step takes 1.5-2 min of CPU to compile on XLA:CPU (the script stays near 10 min there).
DEFAULT_VARIANTS = {
    "cifar10_ncsnpp": ("baseline", "remat", "bf16+remat", "accum2"),
    "cifar10_ddpmpp": ("baseline", "bf16+remat"),
    "digits": tuple(VARIANTS),
}
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def measure(config, batch: int, grad_accum_steps: int, compiler_options: dict) -> dict:
    """Compile-only memory analysis of one `training.train_step` on a batch of ``batch``."""
    model = models.get_model(config)
    optimizer = training.create_optimizer(config)
    rng = jax.random.PRNGKey(0)
    state = jax.eval_shape(
        lambda key: training.create_train_state(config, model, key, optimizer), rng
    )
    images = jax.ShapeDtypeStruct((batch, *pipeline.image_shape(config)), jnp.float32)

    step = common.train_step_fn(config, model, optimizer, grad_accum_steps=grad_accum_steps)
    start = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=0).lower(state, {"image": images}, rng)
    compiled = lowered.compile(compiler_options)
    params = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    return {
        "num_params": int(params),
        "compile_s": round(time.perf_counter() - start, 1),
        **common.compiled_memory(compiled),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument(
        "--variants", default=None, help=f"comma-separated subset of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--batch", type=int, default=None, help="per-device batch (all configs)")
    parser.add_argument("--full_compile", action="store_true", help="default XLA options")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args()
    configs = args.configs.split(",")
    variants = [] if args.variants is None else args.variants.split(",")
    for names, valid, what in ((configs, CONFIGS, "config"), (variants, VARIANTS, "variant")):
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise ValueError(f"Unknown {what}(s) {unknown}; valid: {', '.join(valid)}.")
    options = {} if args.full_compile else FAST_COMPILE
    results = {"machine": common.machine_info(), "compiler_options": options, "configs": {}}
    for name in configs:
        get_config, default_batch = CONFIGS[name]
        batch = args.batch or default_batch
        rows = {}
        for variant in variants or DEFAULT_VARIANTS[name]:
            config = get_config()
            knobs = dict(VARIANTS[variant])
            accum = knobs.pop("grad_accum_steps", 1)
            if batch % accum:
                raise ValueError(f"--batch {batch} is not divisible by {accum} micro-batches.")
            config.model.update(knobs)
            rows[variant] = measure(config, batch, accum, options)
            base = rows.get("baseline", {}).get("peak_bytes")
            if base:
                rows[variant]["peak_vs_baseline"] = round(rows[variant]["peak_bytes"] / base, 3)
            print(f"{name}/{variant}: {rows[variant]}", file=sys.stderr, flush=True)
        results["configs"][name] = {"per_device_batch": batch, "variants": rows}
    common.emit(results, args.out)


if __name__ == "__main__":
    main()
