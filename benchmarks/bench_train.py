"""Training throughput of the jitted train step (`training.train_steps`) on this machine.

    python benchmarks/bench_train.py [--cases digits,cifar10_ncsnpp,cifar10_ddpmpp]
        [--dispatches 3] [--cifar_batch 8] [--dtype bfloat16] [--remat] [--grad_accum 2]
        [--out F]

Cases: ``digits`` (the offline default config as shipped), ``cifar10_ncsnpp``
(``configs/ve/cifar10_ncsnpp_continuous.py``, the paper's 62M-parameter NCSN++) and
``cifar10_ddpmpp`` (``configs/vp/cifar10_ddpmpp_continuous.py``), the CIFAR-10 ones with global
batch ``--cifar_batch``. Each case compiles the step once (reported separately), runs one
warm-up and ``--dispatches`` timed dispatches of ``n_jitted_steps`` updates on synthetic batches
of the config's shape over all local devices, and reports steps/s, examples/s, the process CPU
time per step, the model FLOPs per step (`models.flops`, the network without remat) with the
achieved TFLOP/s and model FLOP utilisation (`common.throughput`; XLA's own count as
``xla_flops``), and peak memory (compile-time and, on GPU/TPU, the allocator's), as JSON on
stdout. Parameters are the network's initial ones (`models.init_params`).
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from score_sde_jax import distributed, models, training  # noqa: E402
from score_sde_jax.configs import digits  # noqa: E402
from score_sde_jax.configs.ve import cifar10_ncsnpp_continuous  # noqa: E402
from score_sde_jax.configs.vp import cifar10_ddpmpp_continuous  # noqa: E402
from score_sde_jax.data import pipeline
from score_sde_jax.models import flops  # noqa: E402

CASES = {
    "digits": digits.get_config,
    "cifar10_ncsnpp": cifar10_ncsnpp_continuous.get_config,
    "cifar10_ddpmpp": cifar10_ddpmpp_continuous.get_config,
}


def bench(config, dispatches: int) -> dict:
    """Times `training.train_steps` for ``config`` on synthetic data; returns a result dict."""
    t = config.training
    grad_accum = t.get("grad_accum_steps", 1)
    mesh = distributed.create_mesh(jax.local_devices())
    replicated = NamedSharding(mesh, P())
    batches = NamedSharding(mesh, P(None, "data"))
    model = models.get_model(config)
    optimizer = training.create_optimizer(config)
    state = jax.device_put(common.initial_train_state(config, model, optimizer), replicated)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    step_fn = jax.jit(
        common.train_step_fn(config, model, optimizer, scan=True),
        in_shardings=(replicated, batches, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    shape = (t.n_jitted_steps, t.batch_size, *pipeline.image_shape(config))
    x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    batch = {"image": jax.device_put(x, batches)}
    rng = jax.random.PRNGKey(1)

    wall, cpu = time.perf_counter(), time.process_time()
    compiled = step_fn.lower(state, batch, rng).compile()
    compile_wall, compile_cpu = time.perf_counter() - wall, time.process_time() - cpu
    state, metrics = compiled(state, batch, rng)  # warm-up
    jax.block_until_ready((state, metrics))

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(dispatches):
        state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))
    steps = dispatches * t.n_jitted_steps
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # Model FLOPs of one update (the network without remat); XLA counts a scan body once: one
    # update, of one micro-batch when accumulating.
    model_flops = flops.count_flops(
        common.train_step_fn(config, model.clone(remat=False), optimizer, scan=True),
        state,
        batch,
        rng,
    )
    xla_flops = common.compiled_flops(compiled)
    xla_flops = None if xla_flops is None else xla_flops * grad_accum
    dtype = str(jnp.dtype(model.dtype)) if hasattr(model, "dtype") else "float32"
    return {
        "num_params": int(num_params),
        "batch_size": t.batch_size,
        "n_jitted_steps": t.n_jitted_steps,
        "grad_accum_steps": grad_accum,
        "dtype": dtype,
        "remat": bool(getattr(model, "remat", False)),
        "image_shape": list(shape[2:]),
        "compile_s": round(compile_wall, 2),
        "compile_cpu_s": round(compile_cpu, 2),
        "steps_timed": steps,
        "steps_per_sec": round(steps / wall, 4),
        "examples_per_sec": round(steps * t.batch_size / wall, 2),
        "cpu_s_per_step": round(cpu / steps, 4),
        **common.throughput(
            model_flops / t.n_jitted_steps, wall / steps, dtype, xla_flops=xla_flops
        ),
        "memory": common.compiled_memory(compiled),
        "runtime_peak_bytes": common.runtime_peak_bytes(),
        "final_loss": float(np.asarray(metrics["loss"])[-1]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--dispatches", type=int, default=3, help="timed dispatches per case")
    parser.add_argument("--cifar_batch", type=int, default=8, help="global batch of CIFAR cases")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"))
    parser.add_argument("--remat", action="store_true", help="set config.model.remat")
    parser.add_argument("--grad_accum", type=int, default=None, help="training.grad_accum_steps")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args()
    results = {"machine": common.machine_info(), "cases": {}}
    for name in args.cases.split(","):
        if name not in CASES:
            raise ValueError(f"Unknown case {name!r}; valid: {', '.join(CASES)}.")
        config = CASES[name]()
        if name.startswith("cifar10"):
            config.training.batch_size = args.cifar_batch
        if args.dtype:
            config.model.dtype = args.dtype
        if args.remat:
            config.model.remat = True
        if args.grad_accum:
            config.training.grad_accum_steps = args.grad_accum
        results["cases"][name] = bench(config, args.dispatches)
        print(f"{name}: {results['cases'][name]}", file=sys.stderr, flush=True)
    common.emit(results, args.out)


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing anything
    main()
