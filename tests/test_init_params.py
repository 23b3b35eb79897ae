"""`models.init_params` gives `model.init`'s parameters bit for bit (no timing here: see
benchmarks/compare_pytorch.py for the start-up time)."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from conftest import FIXTURES

from score_sde_jax import models
from score_sde_jax.models import batched_jaxpr


def _assert_trees_equal(a, b):
    paths_a, paths_b = (
        jax.tree_util.tree_flatten_with_path(a),
        jax.tree_util.tree_flatten_with_path(b),
    )
    assert [p for p, _ in paths_a[0]] == [p for p, _ in paths_b[0]]
    for (path, x), (_, y) in zip(paths_a[0], paths_b[0], strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape, path
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def test_batched_evaluation_is_exact_and_keeps_structure():
    def fn(key, scale):
        keys = [jax.random.fold_in(key, i) for i in range(6)]
        shapes = [(3, 4), (3, 4), (5,), (3, 4), (5,), (2, 2, 2)]
        draws = [
            jax.random.uniform(k, s) * (i + 1.5)
            for i, (k, s) in enumerate(zip(keys, shapes, strict=True))
        ]
        return {"draws": draws, "normal": jax.random.normal(keys[0], (7,)) * scale, "one": scale}

    args = (jax.random.PRNGKey(3), jnp.float32(0.3))
    _assert_trees_equal(batched_jaxpr.evaluate(fn, *args), jax.jit(fn)(*args))


# Tiny versions of the fixture networks: the jitted reference compiles in seconds, not minutes.
TINY = {"nf": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (4,)}


def test_init_params_equals_jitted_init():
    # NCSN++ with Fourier features (normal init), FIR convolutions, attention and both pyramids.
    npz = np.load(FIXTURES / "official_models" / "ncsnpp_ve_small.npz")
    config = ml_collections.ConfigDict(json.loads(str(npz["config_json"]))["config"])
    config.model.update(TINY)
    config.data.image_size = 8
    model = models.get_model(config)
    x = jnp.zeros((1, 8, 8, config.data.num_channels), jnp.float32)
    labels = jnp.asarray(npz["labels"][:1])
    rng = jax.random.PRNGKey(7)
    # Under jit, init_params is model.init itself: the reference.
    reference = jax.jit(lambda rng: models.init_params(model, rng, x, labels))(rng)
    _assert_trees_equal(models.init_params(model, rng, x, labels), reference)
