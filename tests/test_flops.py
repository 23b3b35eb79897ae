"""Model FLOPs (`score_sde_jax.models.flops`): an analytic per-layer count, and the same number
whichever convolution code path a backend takes."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import FIXTURES

from score_sde_jax import models
from score_sde_jax.models import fir, flops, layers, ncsnpp


@pytest.fixture(scope="module")
def small():
    """The ncsnpp_ve_small fixture network (16 px; FIR, attention, residual input pyramid)."""
    npz = np.load(FIXTURES / "official_models" / "ncsnpp_ve_small.npz")
    config = ml_collections.ConfigDict(json.loads(str(npz["config_json"]))["config"])
    model = models.get_model(config)
    x, labels = jnp.asarray(npz["x"]), jnp.asarray(npz["labels"])
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, labels))["params"]
    return model, params, x, labels


def _layer_flops(module, args, out):
    """2 × multiply-adds of one layer call, from its parameter and activation shapes."""
    if isinstance(module, nn.Conv | fir.Conv2d):
        leaf = "kernel" if isinstance(module, nn.Conv) else "weight"
        kh, kw, c_in, _ = module.variables["params"][leaf].shape
        if isinstance(module, fir.Conv2d) and module.up:
            raise NotImplementedError("not in this network")
        return 2 * out.size * kh * kw * c_in
    if isinstance(module, nn.Dense | layers.NIN):
        return 2 * out.size * args[0].shape[-1]
    if isinstance(module, ncsnpp.AttnBlockpp):  # q·kᵀ and softmax(·)·v over H·W positions
        b, h, w, c = args[0].shape
        return 2 * 2 * b * (h * w) ** 2 * c
    return 0


def test_forward_count_equals_analytic_layer_count(small):
    model, params, x, labels = small
    analytic = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            analytic.append(_layer_flops(context.module, args, out))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda p: model.apply({"params": p}, x, labels), params)
    counted = flops.count_flops(lambda p: model.apply({"params": p}, x, labels), params)
    assert counted == sum(analytic) > 0
    # XLA's count of the unoptimised program adds elementwise work and skips padded taps.
    xla = jax.jit(lambda p: model.apply({"params": p}, x, labels)).lower(params).cost_analysis()
    assert 0.85 < counted / xla["flops"] < 1.15


def test_count_does_not_depend_on_the_backend(small, monkeypatch):
    """The jaxpr of a training gradient, hence its model FLOPs, is the same whatever backend the
    network is traced for (no layer picks a code path by backend)."""
    model, params, x, labels = small

    def gradient_flops():
        def loss(p):
            return jnp.mean(model.apply({"params": p}, x, labels) ** 2)

        return flops.count_flops(jax.grad(loss), params)

    assert jax.default_backend() == "cpu"
    on_cpu = gradient_flops()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    on_gpu = gradient_flops()
    forward = flops.count_flops(lambda p: model.apply({"params": p}, x, labels), params)
    # Input gradient and kernel gradient of every layer but the first: about 3× the forward.
    assert on_cpu == on_gpu
    assert 2.8 * forward < on_cpu < 3 * forward


def test_scan_counts_its_body_per_iteration():
    w = jnp.ones((4, 4))

    def body(h, _):
        return h @ w, None

    def scanned(h):
        return jax.lax.scan(body, h, None, length=5)[0]

    assert flops.count_flops(scanned, jnp.ones((2, 4))) == 5 * 2 * 2 * 4 * 4


def test_mfu():
    assert flops.mfu(1e12, 2.0, 1e12) == 0.5
    assert flops.mfu(1e12, 2.0, None) is None
