"""Shared helpers of the benchmark scripts: the train step, FLOP counts, model FLOP utilisation
and memory.

Utilisation (MFU) is computed from *model* FLOPs (`score_sde_jax.models.flops.count_flops`: the
multiply-adds of the convolutions and matrix products in the jaxpr, the same number on every
backend, without recomputation: count a network without ``remat``). XLA's cost analysis of the
compiled program (`compiled_flops`) is reported next to it for reference only: it is what one
backend's optimised program executes (recomputed forward passes included, while-loop bodies once
whatever their trip count, and on GPUs without the convolutions that become library calls).
"""

import functools
import importlib
import json
import os
import platform

import jax
import jax.numpy as jnp

from score_sde_jax import models, sde_lib, training
from score_sde_jax.data import pipeline
from score_sde_jax.models import flops as flops_lib

# Dense (no sparsity) peak FLOP/s per device from the vendors' datasheets, by the compute dtype
# of the network. "float32" is the rate that jax's default matmul/convolution precision uses:
# TF32 tensor cores on NVIDIA Ampere/Hopper, one bfloat16 MXU pass on TPUs.
PEAK_FLOPS = {
    "H200": {"bfloat16": 989.4e12, "float32": 494.7e12},  # H200 SXM (H100 SXM compute)
    "H100 PCIe": {"bfloat16": 756.0e12, "float32": 378.0e12},
    "H100": {"bfloat16": 989.4e12, "float32": 494.7e12},  # H100 SXM
    "A100": {"bfloat16": 312.0e12, "float32": 156.0e12},
    "TPU v4": {"bfloat16": 275.0e12, "float32": 275.0e12},
    "TPU v5 lite": {"bfloat16": 197.0e12, "float32": 197.0e12},  # v5e
    "TPU v5p": {"bfloat16": 459.0e12, "float32": 459.0e12},
    "TPU v5": {"bfloat16": 459.0e12, "float32": 459.0e12},  # v5p reports itself as "TPU v5"
    "TPU v6 lite": {"bfloat16": 918.0e12, "float32": 918.0e12},  # v6e
}


def load_config(name: str):
    """The config of a paper experiment by name, e.g. ``ve/cifar10_ncsnpp_continuous``."""
    return importlib.import_module("score_sde_jax.configs." + name.replace("/", ".")).get_config()


def initial_train_state(config, model, optimizer) -> training.TrainState:
    """A `training.TrainState` with the network's initial parameters (`models.init_params`)."""
    x = jnp.zeros((1, *pipeline.image_shape(config)), jnp.float32)
    params = models.init_params(model, jax.random.PRNGKey(0), x, jnp.ones((1,)))
    return training.TrainState.create(params, optimizer)


def train_step_fn(config, model, optimizer, *, scan: bool = False, grad_accum_steps=None):
    """``step(state, batch, rng)``: `training.train_step` of ``model`` as ``config`` trains it
    (`training.train_steps` over stacked batches with ``scan``); ``grad_accum_steps`` defaults
    to the config's."""
    if grad_accum_steps is None:
        grad_accum_steps = config.training.get("grad_accum_steps", 1)
    loss_fn = training.create_loss_fn(config, sde_lib.get_sde(config), model, train=True)
    # Unrolled where the training loop unrolls it.
    unrolled = {"unroll": training.unrolls_on(jax.default_backend())} if scan else {}
    return functools.partial(
        training.train_steps if scan else training.train_step,
        **unrolled,
        loss_fn=training.image_loss(loss_fn),
        optimizer=optimizer,
        learning_rate_fn=training.create_learning_rate_fn(config),
        ema_rate=config.model.ema_rate,
        grad_accum_steps=grad_accum_steps,
    )


def _table_key(device_kind: str) -> str | None:
    """The `PEAK_FLOPS` entry of a ``jax.Device.device_kind`` (first, most specific match)."""
    kind = device_kind.lower()
    if "h100" in kind and "pcie" in kind:
        return "H100 PCIe"
    for key in ("H200", "H100", "A100", "TPU v5 lite", "TPU v5p", "TPU v6 lite", "TPU v4"):
        if key.lower() in kind:
            return key
    if kind.startswith("tpu v5e"):
        return "TPU v5 lite"
    if kind.strip() == "tpu v5":
        return "TPU v5"
    return None


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of one device for ``dtype`` ('bfloat16' or 'float32'); None if unknown (CPUs)."""
    key = _table_key(device_kind)
    return None if key is None else PEAK_FLOPS[key].get(str(dtype))


def compiled_flops(compiled) -> float | None:
    """XLA's FLOPs of one call of a ``jax.stages.Compiled`` (None if absent); not model FLOPs."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(analysis, list | tuple):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def throughput(
    flops: float | None, seconds: float, dtype: str, device=None, xla_flops: float | None = None
) -> dict:
    """Achieved model FLOP/s of ``flops`` (model FLOPs) done in ``seconds`` and the model FLOP
    utilisation of one device's dense peak.

    Returns ``{"flops", "tflops_per_s", "peak_tflops_per_s", "mfu", "xla_flops"}``; the peak and
    MFU are None where the device's peak is unknown (e.g. CPUs).
    """
    device = device or jax.devices()[0]
    peak = peak_flops(device.device_kind, dtype)
    achieved = flops / seconds if flops and seconds > 0 else None
    mfu = None if achieved is None else flops_lib.mfu(flops, seconds, peak)
    return {
        "flops": flops,
        "tflops_per_s": None if achieved is None else round(achieved / 1e12, 4),
        "peak_tflops_per_s": None if peak is None else round(peak / 1e12, 1),
        "mfu": None if mfu is None else round(mfu, 4),
        "xla_flops": xla_flops,
    }


def compiled_memory(compiled) -> dict:
    """XLA's compile-time buffer assignment: peak = temporaries + arguments + outputs − aliased.

    Sizes in bytes; ``peak_bytes`` is what the program needs on the device while it runs
    (donated inputs that alias outputs are counted once).
    """
    m = compiled.memory_analysis()
    if m is None:
        return {"peak_bytes": None}
    out = {
        "temp_bytes": int(m.temp_size_in_bytes),
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
    }
    out["peak_bytes"] = (
        out["temp_bytes"] + out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
    )
    return out


def runtime_peak_bytes(device=None) -> int | None:
    """The allocator's peak bytes in use since start (GPU/TPU); None where unsupported (CPU)."""
    device = device or jax.devices()[0]
    stats = device.memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def machine_info() -> dict:
    """Where the numbers were measured: devices, jax version, host."""
    devices = jax.devices()
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def emit(report: dict, out: str | None) -> None:
    """Prints ``report`` as JSON on stdout and, if ``out`` is given, writes it there too."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
