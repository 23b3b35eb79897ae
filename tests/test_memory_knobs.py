"""Memory knobs of NCSN++ / DDPM++: ``model.remat`` and ``model.dtype = "bfloat16"``.

A shrunk member of the CIFAR-10 NCSN++ continuous family (``configs/ve/cifar10_ncsnpp_continuous``
with nf 16, ch_mult (1, 2), one block per level, 16×16 images, attention at 8×8; batch 8) is
differentiated through the config's own training loss (continuous VE score matching, Eq. (7))
with dropout on. Peak memory is XLA's compile-time buffer assignment
(`memory_analysis()`: temporaries + arguments + outputs − aliased), the number
`benchmarks/bench_memory.py` reports for the full-size networks.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from score_sde_jax import models, sde_lib, training
from score_sde_jax.configs.ve import cifar10_ncsnpp_continuous
from score_sde_jax.configs.ve.ncsnv2 import cifar10 as ncsnv2_cifar10
from score_sde_jax.configs.vp import cifar10_ddpmpp_continuous
from score_sde_jax.configs.vp.ddpm import cifar10 as ddpm_cifar10

BATCH = 8
# LLVM optimisation only changes the generated machine code, not XLA's buffer assignment: the
# memory numbers are those of a default compile, in a fraction of the compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# bfloat16 keeps 8 significant bits: unit roundoff 2⁻⁸ ≈ 3.9e-3.
BF16_EPS = 2.0**-8


def _shrink(config: ml_collections.ConfigDict, **model_overrides) -> ml_collections.ConfigDict:
    m = config.model
    # DDPM's 32-group GroupNorm needs 32 channels.
    m.nf = 32 if m.name == "ddpm" else 16
    m.ch_mult, m.num_res_blocks, m.attn_resolutions = (1, 2), 1, (8,)
    config.data.image_size = 16
    m.update(model_overrides)
    return config


def _param_shapes(config) -> dict:
    model = models.get_model(config)
    x = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), jnp.float32)
    tree = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, labels)["params"]
    return {"/".join(k): (v.shape, v.dtype) for k, v in flatten_dict(tree).items()}


KNOBS = {
    "float32": {},
    "remat": {"remat": True},
    "bfloat16": {"dtype": "bfloat16"},
    "bfloat16+remat": {"dtype": "bfloat16", "remat": True},
}


@pytest.mark.parametrize(
    "family", [cifar10_ncsnpp_continuous.get_config, cifar10_ddpmpp_continuous.get_config]
)
def test_knobs_keep_the_parameter_tree(family):
    """Same paths, shapes and float32 dtypes with every knob: checkpoints load either way."""
    trees = {name: _param_shapes(_shrink(family(), **knob)) for name, knob in KNOBS.items()}
    reference = trees["float32"]
    assert any(path.startswith("ResnetBlock") for path in reference)
    assert any(path.startswith("AttnBlockpp_") for path in reference)
    for name, tree in trees.items():
        assert tree == reference, name
    assert {dtype for _, dtype in reference.values()} == {jnp.dtype(jnp.float32)}


@functools.cache
def _compiled(knob: str, family=cifar10_ncsnpp_continuous.get_config):
    """The config's training loss and its gradient, compiled for one knob setting."""
    config = _shrink(family(), **KNOBS[knob])
    model = models.get_model(config)
    loss_fn = training.create_loss_fn(config, sde_lib.get_sde(config), model, train=True)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(BATCH, 16, 16, 3)), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x[:1], jnp.ones((1,)))["params"]
    # Random weights of one scale everywhere (the DDPM init zeroes the output layers, which would
    # make every network output ~0 and the comparisons vacuous); the same for every knob.
    params = jax.tree.map(
        lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype), shapes
    )
    # The counter-based "rbg" PRNG compiles much faster on XLA:CPU than threefry (dropout masks).
    key = jax.random.key(1, impl="rbg")
    compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(params, key, x).compile(FAST_COMPILE)
    loss, grads = compiled(params, key, x)
    m = compiled.memory_analysis()
    peak = (
        m.temp_size_in_bytes
        + m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
    )
    return float(loss), grads, peak


def _relative_error(a, b) -> float:
    """‖a − b‖₂ / ‖b‖₂ over all leaves of two gradient trees."""
    diff = sum(
        float(jnp.sum(jnp.square(p - q)))
        for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    norm = sum(float(jnp.sum(jnp.square(q))) for q in jax.tree.leaves(b))
    return (diff / norm) ** 0.5


def test_remat_gives_the_same_loss_and_gradients():
    """Recomputation replays the forward pass (same dropout masks): float32 round-off only.

    Measured: identical loss, gradient relative L2 error 7e-8.
    """
    loss, grads, _ = _compiled("float32")
    loss_remat, grads_remat, _ = _compiled("remat")
    assert loss > 0
    assert loss_remat == pytest.approx(loss, rel=1e-6)
    assert _relative_error(grads_remat, grads) < 1e-5
    assert jax.tree.structure(grads_remat) == jax.tree.structure(grads)


def test_bfloat16_remat_gives_the_float32_loss_to_bfloat16_tolerance():
    """bfloat16 + remat vs float32: loss within one bfloat16 unit roundoff (2⁻⁸).

    Measured: loss relative error 5.5e-6 (the loss sums 768 squared errors per example, which
    averages the bfloat16 rounding out), gradient relative L2 error 1.5e-2. The gradients are
    float32 (parameters stay float32) and really differ, so bfloat16 was really used.
    """
    loss, grads, _ = _compiled("float32")
    loss_bf16, grads_bf16, _ = _compiled("bfloat16+remat")
    assert abs(loss_bf16 - loss) / loss < BF16_EPS
    assert {leaf.dtype for leaf in jax.tree.leaves(grads_bf16)} == {jnp.dtype(jnp.float32)}
    assert 1e-3 < _relative_error(grads_bf16, grads) < 0.2


def test_remat_and_bfloat16_lower_the_peak_memory():
    """XLA's peak memory of loss + gradient: remat keeps only block inputs for the backward pass.

    Measured on XLA:CPU (jax 0.12): float32 37.2 MB, remat 12.3 MB (0.33×), bfloat16 + remat
    8.7 MB (0.23×); bfloat16 alone 33.9 MB (0.91×): XLA:CPU computes bfloat16 convolutions and
    matmuls on float32 copies of their operands (it has no bfloat16 kernels for them), so the
    backward pass's temporaries stay float32-sized.
    """
    _, _, peak = _compiled("float32")
    _, _, peak_remat = _compiled("remat")
    _, _, peak_both = _compiled("bfloat16+remat")
    assert peak_remat < 0.5 * peak
    assert peak_both < 0.9 * peak_remat
    assert peak_both < 0.4 * peak


def test_ddpm_remat_same_tree_loss_and_gradients_less_memory():
    """DDPM (vp/ddpm/cifar10, shrunk) has ``remat`` too: same parameters, loss and gradients.

    Measured on XLA:CPU: peak 28.2 MB -> 14.6 MB (0.52×), identical loss, gradient relative L2
    error 2.2e-7.
    """
    assert _param_shapes(_shrink(ddpm_cifar10.get_config(), remat=True)) == _param_shapes(
        _shrink(ddpm_cifar10.get_config())
    )
    loss, grads, peak = _compiled("float32", ddpm_cifar10.get_config)
    loss_remat, grads_remat, peak_remat = _compiled("remat", ddpm_cifar10.get_config)
    assert loss > 0
    assert loss_remat == pytest.approx(loss, rel=1e-6)
    assert _relative_error(grads_remat, grads) < 1e-5
    assert peak_remat < 0.7 * peak


@pytest.mark.parametrize(
    "family, knob, value",
    [
        (ddpm_cifar10.get_config, "dtype", "bfloat16"),
        (ncsnv2_cifar10.get_config, "remat", True),
    ],
)
def test_knobs_a_network_lacks_are_refused(family, knob, value):
    config = family()
    config.model[knob] = value
    with pytest.raises(ValueError, match=f"model.{knob}=.* is available for model.name in"):
        models.get_model(config)
