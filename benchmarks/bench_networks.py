"""Forward and train-step time of the NCSN++ / DDPM++ networks on this machine; prints JSON.

Cases (configs built inline; the same networks as the configs named below, docs/configs.md):
  * ``ncsnpp_cont_cifar10`` — ve/cifar10_ncsnpp_continuous (VE, Fourier, FIR), batch 8;
  * ``ddpmpp_cont_cifar10`` — vp/cifar10_ddpmpp_continuous (VP, positional, no FIR), batch 8;
  * ``ncsnpp_small`` — the conformance fixtures' shrunk NCSN++ (16 px, nf 16, ch_mult (1, 2, 2),
    one block per level, attention at 8×8), batch 32.

The train step is ``jax.jit`` of value_and_grad of a mean-square loss of the network output
(train mode, dropout on) plus an optax Adam update. Compile time (lower + compile) is reported
separately from the steady-state time (median of ``--repeats`` runs after one warm-up run), each
as wall and process-CPU seconds. Each also reports the model FLOPs (`models.flops`), the achieved
model TFLOP/s and utilisation against the device's peak where known (`common.throughput`, with
XLA's own count as ``xla_flops``) and XLA's peak memory (`common.compiled_memory`). Parameters
are the network's initial ones (`models.init_params`, timed as ``init``: start-up cost).

Usage: python benchmarks/bench_networks.py [--repeats 3] [--cases a,b] [--dtype bfloat16]
[--remat] [--batch N] [--out FILE]
(XLA uses every core; restrict with ``taskset -c 0,1``.)
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from score_sde_jax import models  # noqa: E402
from score_sde_jax.models import flops, get_model  # noqa: E402


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="ncsnpp_cont_cifar10,ddpmpp_cont_cifar10,ncsnpp_small")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="network compute dtype (config.model.dtype); bfloat16 is fast on CPUs with AMX when "
        "XLA_FLAGS=--xla_cpu_experimental_onednn_custom_call=true",
    )
    parser.add_argument(
        "--remat", action="store_true", help="recompute block activations (config.model.remat)"
    )
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    parser.add_argument("--batch", type=int, default=None, help="batch of the CIFAR-10 cases")
    parser.add_argument(
        "--dropout-prng",
        default="threefry2x32",
        choices=("threefry2x32", "rbg", "unsafe_rbg"),
        help="PRNG implementation of the dropout key (threefry compiles slowly on XLA:CPU)",
    )
    return parser.parse_args()


def _cifar10_config(**model_overrides) -> ml_collections.ConfigDict:
    """CIFAR-10 NCSN++-family config (the paper's App. H settings, as in configs/ve and configs/vp)."""
    config = ml_collections.ConfigDict()
    config.training = ml_collections.ConfigDict({"continuous": True})
    config.data = ml_collections.ConfigDict(
        {"image_size": 32, "num_channels": 3, "centered": False}
    )
    config.model = ml_collections.ConfigDict(
        {
            "name": "ncsnpp",
            "sigma_min": 0.01,
            "sigma_max": 50.0,
            "num_scales": 1000,
            "dropout": 0.1,
            "embedding_type": "fourier",
            "fourier_scale": 16.0,
            "scale_by_sigma": True,
            "nonlinearity": "swish",
            "nf": 128,
            "ch_mult": (1, 2, 2, 2),
            "num_res_blocks": 4,
            "attn_resolutions": (16,),
            "resamp_with_conv": True,
            "conditional": True,
            "fir": True,
            "fir_kernel": (1, 3, 3, 1),
            "skip_rescale": True,
            "resblock_type": "biggan",
            "progressive": "none",
            "progressive_input": "residual",
            "progressive_combine": "sum",
            "init_scale": 0.0,
        }
    )
    config.model.update(model_overrides)
    return config


def _cases():
    ddpmpp = _cifar10_config(
        fir=False, progressive_input="none", embedding_type="positional", scale_by_sigma=False
    )
    ddpmpp.data.centered = True
    small = _cifar10_config(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,))
    small.data.image_size = 16
    return {
        # VE continuous: the label is σ(t).
        "ncsnpp_cont_cifar10": (_cifar10_config(), 8, lambda t: 0.01 * (50.0 / 0.01) ** t),
        # VP continuous: the label is 999·t.
        "ddpmpp_cont_cifar10": (ddpmpp, 8, lambda t: 999.0 * t),
        "ncsnpp_small": (small, 32, lambda t: 0.01 * (50.0 / 0.01) ** t),
    }


def _timed(fn, repeats):
    """Median wall and process-CPU seconds of ``repeats`` runs after one warm-up run.

    CPU time (all threads) is reported because the machine may be shared: on an idle 2-core
    machine the wall time of a well-parallelised step is about CPU time / 2.
    """
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "runs_wall_s": [round(t, 3) for t in walls],
    }


def _compile(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def _step_functions(model, optimizer, target):
    """``forward(params, x, labels)`` (eval mode) and ``train_step(params, opt_state, x, labels,
    rng)``: value_and_grad of a mean-square loss (train mode) and an optax update."""

    def forward(params, x, labels):
        return model.apply({"params": params}, x, labels, train=False)

    def train_step(params, opt_state, x, labels, rng):
        def loss_fn(params):
            out = model.apply({"params": params}, x, labels, train=True, rngs={"dropout": rng})
            return jnp.mean(jnp.square(out - target))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return forward, train_step


def bench_case(config, batch_size, label_fn, repeats, dropout_prng):
    """Compile and steady-state times of forward (eval) and a full Adam train step."""
    model = get_model(config)
    size, channels = config.data.image_size, config.data.num_channels
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(batch_size, size, size, channels)), jnp.float32)
    labels = label_fn(jnp.asarray(rng.uniform(1e-5, 1.0, size=(batch_size,)), jnp.float32))
    target = jnp.zeros_like(x)
    wall, cpu = time.perf_counter(), time.process_time()
    params = jax.block_until_ready(
        models.init_params(model, jax.random.PRNGKey(0), x[:1], labels[:1])
    )
    init = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    num_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
    optimizer = optax.adam(2e-4)
    opt_state = optimizer.init(params)
    key_drop = jax.random.key(1, impl=dropout_prng)
    forward, train_step = _step_functions(model, optimizer, target)
    # Model FLOPs are those of the network without recomputation (`flops` module docstring).
    forward_flops, train_flops = (
        flops.count_flops(fn, *args)
        for fn, args in zip(
            _step_functions(model.clone(remat=False), optimizer, target),
            ((params, x, labels), (params, opt_state, x, labels, key_drop)),
            strict=True,
        )
    )

    dtype = str(jnp.dtype(model.dtype))
    result = {
        "batch_size": batch_size,
        "image_size": size,
        "num_params": int(num_params),
        "dtype": dtype,
        "remat": bool(model.remat),
        "init": init,
    }
    forward_c, result["forward_compile"] = _compile(forward, params, x, labels)
    result["forward"] = _timed(lambda: forward_c(params, x, labels).block_until_ready(), repeats)
    step_c, result["train_step_compile"] = _compile(
        train_step, params, opt_state, x, labels, key_drop
    )
    result["train_step"] = _timed(
        lambda: jax.block_until_ready(step_c(params, opt_state, x, labels, key_drop)), repeats
    )
    for name, compiled, model_flops in (
        ("forward", forward_c, forward_flops),
        ("train_step", step_c, train_flops),
    ):
        timing = result[name]
        timing["examples_per_sec"] = round(batch_size / timing["wall_s"], 2)
        xla_flops = common.compiled_flops(compiled)
        timing.update(common.throughput(model_flops, timing["wall_s"], dtype, xla_flops=xla_flops))
        timing["memory"] = common.compiled_memory(compiled)
    return result


def main():
    args = _parse_args()
    cases = _cases()
    selected = args.cases.split(",")
    unknown = [c for c in selected if c not in cases]
    if unknown:
        raise ValueError(f"Unknown case(s) {unknown}; valid: {sorted(cases)}.")
    report = {
        "machine": {
            **common.machine_info(),
            "load_avg_before": os.getloadavg(),
            "python": sys.version.split()[0],
        },
        "repeats": args.repeats,
        "dropout_prng": args.dropout_prng,
        "results": {},
    }
    for name in selected:
        config, batch_size, label_fn = cases[name]
        if args.batch and name.endswith("cifar10"):
            batch_size = args.batch
        config.model.dtype = args.dtype
        config.model.remat = args.remat
        report["results"][name] = bench_case(
            config, batch_size, label_fn, args.repeats, args.dropout_prng
        )
        print(f"# {name} done", file=sys.stderr, flush=True)
    report["machine"]["load_avg_after"] = os.getloadavg()
    common.emit(report, args.out)


if __name__ == "__main__":
    main()
