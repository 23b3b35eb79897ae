"""Where a train step's device time goes: a profiler trace of a few steps, summed; prints JSON.

    python benchmarks/profile_train_step.py [--config ve/cifar10_ncsnpp_continuous] [--batch 128]
        [--dtype bfloat16] [--steps 5] [--top 20] [--out F]

Compiles one `training.train_step` (as `benchmarks.common.train_step_fn` builds it) of the
config's network at ``--batch``, runs it twice, then traces ``--steps`` more with `jax.profiler`
(the Perfetto trace that jaxlib writes itself) and sums the events of the accelerator's streams:
wall and busy device time per step (the difference is time the device waits for the host), time
by kind of kernel (convolutions and matrix products, XLA's fusions, copies and transposes,
reductions, the rest), and the kernels that take the most time. With the model FLOPs of a step
(`models.flops`) it reports achieved TFLOP/s and the model FLOP utilisation of the device's peak.
On a CPU there are no device streams: the summary is then empty and only the step time counts.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from score_sde_jax import models, training  # noqa: E402
from score_sde_jax.data import pipeline  # noqa: E402
from score_sde_jax.models import flops as flops_lib  # noqa: E402

# Kernel kinds by name, first match wins: cuDNN / cuBLAS / CUTLASS kernels, then XLA's own.
KINDS = (
    ("conv_matmul", r"xmma|cutlass|gemm|conv|cudnn|wgrad|dgrad|fprop|sm\d+_|implicit|winograd"),
    ("copy_transpose", r"transpose|copy|nchw|nhwc|memcpy|memset|convert_layout"),
    ("reduction", r"reduce|reduction"),
    ("fusion", r"fusion|loop_|input_"),
)


def kind_of(name: str) -> str:
    """The `KINDS` entry whose pattern matches kernel ``name`` (case-insensitive), or 'other'."""
    lower = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, lower)), "other")


def summarize(trace: dict, steps: int, top: int) -> dict:
    """Device time per step of a Perfetto ``trace`` (dict with ``traceEvents``) of ``steps``
    steps: busy time, by `kind_of`, and the ``top`` kernels (total ms per step, calls per step)."""
    events = trace["traceEvents"]
    devices = {
        e["pid"]
        for e in events
        if e.get("ph") == "M"
        and e.get("name") == "process_name"
        and str(e["args"].get("name", "")).startswith("/device:")
    }
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name" and e["pid"] in devices
    }
    streams = {key for key, name in threads.items() if "stream" in name.lower()}
    kernels = [e for e in events if e.get("ph") == "X" and (e["pid"], e.get("tid")) in streams]
    by_name = collections.defaultdict(lambda: [0.0, 0])
    for e in kernels:
        by_name[e["name"]][0] += e["dur"]
        by_name[e["name"]][1] += 1
    busy_us = sum(d for d, _ in by_name.values())
    by_kind = collections.Counter()
    for name, (dur, _) in by_name.items():
        by_kind[kind_of(name)] += dur
    ranked = sorted(by_name.items(), key=lambda item: -item[1][0])[:top]
    return {
        "busy_ms_per_step": round(busy_us / steps / 1e3, 3),
        "kernels_per_step": round(len(kernels) / steps, 1),
        "ms_per_step_by_kind": {k: round(v / steps / 1e3, 3) for k, v in by_kind.most_common()},
        "top_kernels": [
            {
                "name": name[:160],
                "kind": kind_of(name),
                "ms_per_step": round(dur / steps / 1e3, 3),
                "calls_per_step": round(calls / steps, 1),
            }
            for name, (dur, calls) in ranked
        ],
    }


def profile(config, steps: int, top: int) -> dict:
    """Compiles, warms up and traces ``steps`` train steps of ``config``; the summary dict."""
    model = models.get_model(config)
    optimizer = training.create_optimizer(config)
    state = common.initial_train_state(config, model, optimizer)
    shape = (config.training.batch_size, *pipeline.image_shape(config))
    batch = {"image": jnp.asarray(np.random.default_rng(0).uniform(size=shape), jnp.float32)}
    fn = common.train_step_fn(config, model, optimizer)
    rng = jax.random.PRNGKey(1)
    model_flops = flops_lib.count_flops(fn, state, batch, rng)
    wall = time.perf_counter()
    step = jax.jit(fn, donate_argnums=0).lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - wall
    for _ in range(2):
        state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory() as log_dir:
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            wall = time.perf_counter()
            for _ in range(steps):
                state, metrics = step(state, batch, rng)
            jax.block_until_ready(metrics)
            seconds = (time.perf_counter() - wall) / steps
        path = glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"), recursive=True)
        with gzip.open(path[0]) as f:
            summary = summarize(json.load(f), steps, top)
    dtype = str(jnp.dtype(config.model.get("dtype", "float32")))
    return {
        "device_kind": jax.devices()[0].device_kind,
        "batch_size": config.training.batch_size,
        "dtype": dtype,
        "compile_s": round(compile_s, 1),
        "wall_ms_per_step": round(seconds * 1e3, 3),
        "examples_per_sec": round(config.training.batch_size / seconds, 1),
        **common.throughput(model_flops, seconds, dtype),
        "memory": common.compiled_memory(step),
        **summary,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ve/cifar10_ncsnpp_continuous")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"))
    parser.add_argument("--steps", type=int, default=5, help="traced steps")
    parser.add_argument("--top", type=int, default=20, help="kernels listed")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args()
    config = common.load_config(args.config)
    config.training.batch_size = args.batch
    if args.dtype:
        config.model.dtype = args.dtype
    report = {"machine": common.machine_info(), "config": args.config}
    report |= profile(config, args.steps, args.top)
    common.emit(report, args.out)


if __name__ == "__main__":
    main()
