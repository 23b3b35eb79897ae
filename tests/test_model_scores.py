"""`models.get_score_fn` reproduces the original `get_score_fn` on every network fixture."""

import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import FIXTURES

from score_sde_jax import checkpoints, models, sde_lib


def _original_tree(z):
    tree = {}
    for key in z.files:
        if key.startswith("params/"):
            *path, leaf = key.split("/")[1:]
            node = tree
            for name in path:
                node = node.setdefault(name, {})
            node[leaf] = z[key]
    return tree


@pytest.mark.parametrize(
    "name",
    [
        "ncsnpp_ve_small",
        "ddpmpp_vp_small",
        "ncsnpp_outputskip_small",
        "ddpm_vp_small",
        "ncsnv2_small",
    ],
)
def test_network_score_equals_the_original(name):
    z = np.load(FIXTURES / "official_models" / f"{name}.npz")
    info = json.loads(str(z["config_json"]))
    config = ml_collections.ConfigDict(info["config"])
    params = checkpoints.params_from_original(config, _original_tree(z))
    model = models.get_model(config)
    score_fn = models.get_score_fn(sde_lib.get_sde(config), model, info["continuous"])
    score = score_fn(params, jnp.asarray(z["x"]), jnp.asarray(z["t"]))
    np.testing.assert_allclose(score, z["score"], rtol=1e-4, atol=1e-5)
