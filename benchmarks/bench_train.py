"""Training throughput of the jitted train step (`train_lib.train_steps`) on this machine.

    python benchmarks/bench_train.py [--cases digits,cifar10_ncsnpp] [--dispatches 3] [--out F]

Cases: ``digits`` (the offline default config as shipped) and ``cifar10_ncsnpp``
(``configs/ve/cifar10_ncsnpp_continuous.py``, the paper's 62M-parameter NCSN++, with batch 8).
Each case compiles the step once, runs ``--dispatches`` dispatches of ``n_jitted_steps`` updates on
synthetic batches of the config's shape over all local devices, and reports compile time,
steps/s, examples/s and the process CPU time per step, as JSON on stdout.
"""

import argparse
import functools
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.ve import cifar10_ncsnpp_continuous  # noqa: E402
from score_sde_jax import input_pipeline, losses, models, sde_lib, train_lib  # noqa: E402
from score_sde_jax.configs import digits  # noqa: E402


def _cifar10_ncsnpp():
    config = cifar10_ncsnpp_continuous.get_config()
    config.training.batch_size = 8
    return config


CASES = {"digits": digits.get_config, "cifar10_ncsnpp": _cifar10_ncsnpp}


def bench(config, dispatches: int) -> dict:
    """Times `train_lib.train_steps` for ``config`` on synthetic data; returns a result dict."""
    t = config.training
    mesh = train_lib.create_mesh(jax.local_devices())
    replicated = NamedSharding(mesh, P())
    batches = NamedSharding(mesh, P(None, "data"))
    model = models.get_model(config)
    sde = sde_lib.get_sde(config)
    optimizer = train_lib.create_optimizer(config)
    loss_fn = losses.get_loss_fn(
        sde,
        train_lib.create_model_fn(model),
        continuous=t.continuous,
        reduce_mean=t.reduce_mean,
        likelihood_weighting=t.likelihood_weighting,
        train=True,
    )
    state = jax.jit(
        functools.partial(train_lib.create_train_state, config, model, optimizer=optimizer),
        out_shardings=replicated,
    )(jax.random.PRNGKey(0))
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    step_fn = jax.jit(
        functools.partial(
            train_lib.train_steps,
            loss_fn=loss_fn,
            optimizer=optimizer,
            learning_rate_fn=train_lib.create_learning_rate_fn(config),
            ema_rate=config.model.ema_rate,
            grad_accum_steps=t.grad_accum_steps,
        ),
        in_shardings=(replicated, batches, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    shape = (t.n_jitted_steps, t.batch_size, *input_pipeline.image_shape(config))
    x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    batch = {"image": jax.device_put(x, batches)}
    rng = jax.random.PRNGKey(1)

    wall, cpu = time.perf_counter(), time.process_time()
    state, metrics = step_fn(state, batch, rng)
    jax.block_until_ready((state, metrics))
    compile_wall, compile_cpu = time.perf_counter() - wall, time.process_time() - cpu

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(dispatches):
        state, metrics = step_fn(state, batch, rng)
    jax.block_until_ready((state, metrics))
    steps = dispatches * t.n_jitted_steps
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "num_params": int(num_params),
        "batch_size": t.batch_size,
        "n_jitted_steps": t.n_jitted_steps,
        "image_shape": list(shape[2:]),
        "first_dispatch_s": round(compile_wall, 2),
        "first_dispatch_cpu_s": round(compile_cpu, 2),
        "steps_timed": steps,
        "steps_per_sec": round(steps / wall, 4),
        "examples_per_sec": round(steps * t.batch_size / wall, 2),
        "cpu_s_per_step": round(cpu / steps, 4),
        "final_loss": float(np.asarray(metrics["loss"])[-1]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--dispatches", type=int, default=3, help="timed dispatches per case")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args()
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],
            "devices": [str(d) for d in jax.local_devices()],
            "jax": jax.__version__,
        },
        "cases": {},
    }
    for name in args.cases.split(","):
        if name not in CASES:
            raise ValueError(f"Unknown case {name!r}; valid: {', '.join(CASES)}.")
        results["cases"][name] = bench(CASES[name](), args.dispatches)
        print(f"{name}: {results['cases'][name]}", file=sys.stderr, flush=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing anything
    main()
