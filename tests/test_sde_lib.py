"""SDE constants, pytree behaviour, the network-label rules and the exact mixture helpers."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import FIXTURES

from score_sde_jax import gmm, score_fns, sde_lib

T_SMALL = jnp.array([1e-5, 1e-3, 1.0])


def test_vp_constants_match_the_original():
    sde = sde_lib.VPSDE(0.1, 20.0, 1000)
    mean, std = sde.marginal_prob(jnp.ones((3, 1)), T_SMALL)
    np.testing.assert_allclose(std, [1.0005e-3, 0.010485, 0.999978], rtol=2e-4)
    np.testing.assert_allclose(mean[2, 0], 0.006572, rtol=2e-4)
    np.testing.assert_allclose(sde.discrete_betas[jnp.array([0, -1])], [1e-4, 0.02], rtol=1e-6)


def test_ve_constants_match_the_original():
    sde = sde_lib.VESDE(0.01, 50.0, 1000)
    _, std = sde.marginal_prob(jnp.ones((3, 1)), T_SMALL)
    np.testing.assert_allclose(std[0], 0.01 * 5000.0**1e-5, rtol=1e-6)
    _, g = sde.sde(jnp.ones((1, 1)), jnp.array([1.0]))
    np.testing.assert_allclose(g, [206.36], rtol=1e-4)
    sigmas = sde.discrete_sigmas
    assert sigmas[0] == pytest.approx(0.01) and sigmas[-1] == pytest.approx(50.0, rel=1e-5)
    # SMLD discretization: G_0 = σ_0 (σ_{-1} = 0) and G_i² = σ_i² − σ_{i−1}².
    _, G = sde.discretize(jnp.ones((2, 1)), jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(G[0], 0.01, rtol=1e-5)
    np.testing.assert_allclose(G[1] ** 2, sigmas[-1] ** 2 - sigmas[-2] ** 2, rtol=1e-4)


def test_subvp_variance_is_the_square_of_one_minus_the_vp_variance_ratio():
    sub, vp = sde_lib.subVPSDE(), sde_lib.VPSDE()
    t = jnp.linspace(1e-3, 1.0, 7)
    _, std_sub = sub.marginal_prob(jnp.ones((7, 1)), t)
    _, std_vp = vp.marginal_prob(jnp.ones((7, 1)), t)
    np.testing.assert_allclose(std_sub, std_vp**2, rtol=1e-5)
    # g² = β(1 − e^{−2∫β}) ≤ β: the sub-VP diffusion is bounded by the VP one.
    _, g_sub = sub.sde(jnp.ones((7, 1)), t)
    _, g_vp = vp.sde(jnp.ones((7, 1)), t)
    assert bool(jnp.all(g_sub <= g_vp))
    np.testing.assert_allclose(g_sub**2, g_vp**2 * -jnp.expm1(4 * vp.log_mean_coeff(t)), rtol=1e-5)


@pytest.mark.parametrize("sde", [sde_lib.VESDE(), sde_lib.VPSDE(), sde_lib.subVPSDE()])
def test_sdes_are_pytrees_usable_under_jit_and_vmap(sde):
    leaves, treedef = jax.tree.flatten(sde)
    assert len(leaves) == 2 and jax.tree.unflatten(treedef, leaves) == sde
    x = jnp.ones((4, 2, 2, 1))
    t = jnp.full((4,), 0.5)
    eager = sde.marginal_prob(x, t)
    jitted = jax.jit(lambda s, x, t: s.marginal_prob(x, t))(sde, x, t)
    np.testing.assert_allclose(eager[1], jitted[1], rtol=1e-6)
    per_example = jax.vmap(lambda xi, ti: sde.sde(xi[None], ti[None])[1][0])(x, t)
    np.testing.assert_allclose(per_example, sde.sde(x, t)[1], rtol=1e-6)


def test_prior_logp_is_the_gaussian_log_density():
    sde = sde_lib.VESDE(0.01, 3.0, 10)
    z = jax.random.normal(jax.random.key(0), (5, 2, 3))
    expected = jax.scipy.stats.norm.logpdf(z, scale=3.0).reshape(5, -1).sum(-1)
    np.testing.assert_allclose(sde.prior_logp(z), expected, rtol=1e-5)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="must be positive"):
        sde_lib.VPSDE(N=0)
    config = ml_collections.ConfigDict({"training": {"sde": "nope"}, "model": {}})
    with pytest.raises(ValueError, match="vesde"):
        sde_lib.get_sde(config)
    with pytest.raises(ValueError, match="Mixture shapes"):
        gmm.mixture([1.0], [[0.0, 0.0]], [np.eye(3)])


def _fixture_config(name):
    z = np.load(FIXTURES / "official_models" / f"{name}.npz")
    info = json.loads(str(z["config_json"]))
    return z, ml_collections.ConfigDict(info["config"]), info["continuous"]


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
def test_labels_equal_what_the_original_fed_its_networks(name):
    z, config, continuous = _fixture_config(name)
    sde = sde_lib.get_sde(config)
    labels = score_fns.get_labels(sde, jnp.asarray(z["t"]), continuous)
    assert labels.dtype == z["labels"].dtype
    np.testing.assert_allclose(labels, z["labels"], rtol=1e-6)


@pytest.mark.parametrize("name", ["ncsnpp_ve_small", "ddpmpp_vp_small", "ddpm_vp_small"])
def test_score_adapter_turns_the_recorded_output_into_the_recorded_score(name):
    z, config, continuous = _fixture_config(name)
    sde = sde_lib.get_sde(config)
    score_fn = score_fns.get_score_fn(
        sde, lambda p, x, labels, rng: jnp.asarray(z["out"]), continuous
    )
    score = score_fn(None, jnp.asarray(z["x"]), jnp.asarray(z["t"]))
    np.testing.assert_allclose(score, z["score"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sde", [sde_lib.VESDE(0.01, 5.0), sde_lib.VPSDE(), sde_lib.subVPSDE()])
def test_mixture_score_is_the_gradient_of_its_log_density(sde):
    params = gmm.mixture(
        [0.3, 0.7], [[1.0, 0.0], [-1.0, 0.5]], [np.eye(2) * 0.1, np.diag([0.2, 0.05])]
    )
    x = jnp.array([[0.1, 0.2], [0.5, -1.0]])
    t = jnp.array([0.1, 0.9])
    score = gmm.get_score_fn(sde)(params, x, t)
    log_p = gmm.get_log_prob_fn(sde)
    h = 1e-2
    for axis in range(2):
        dx = jnp.zeros(2).at[axis].set(h)
        fd = (log_p(params, x + dx, t) - log_p(params, x - dx, t)) / (2 * h)
        np.testing.assert_allclose(score[:, axis], fd, rtol=2e-3, atol=2e-3)
    # The component posterior of a one-point-mass-like mixture is a proper distribution.
    post = jnp.exp(gmm.get_classifier_fn(sde)(params, x, t))
    np.testing.assert_allclose(post.sum(-1), 1.0, rtol=1e-5)
