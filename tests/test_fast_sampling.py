"""Few-step samplers against the exact Gaussian-mixture setting of the core tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax import fast_sampling, gmm, sampling, sde_lib

N_SAMPLES = 4000
MIXTURE = gmm.mixture(
    [0.3, 0.7], [[0.8, -0.2], [-0.4, 0.3]], [np.eye(2) * 0.05, np.diag([0.1, 0.02])]
)
SDES = {
    "ve": sde_lib.VESDE(0.01, 5.0, 1000),
    "vp": sde_lib.VPSDE(0.1, 20.0, 1000),
    "subvp": sde_lib.subVPSDE(0.1, 20.0, 1000),
}


def sliced_wasserstein(a, b, n_proj=256):
    """Sliced 2-Wasserstein distance between two equally sized point clouds (fixed directions)."""
    d = jax.random.normal(jax.random.key(123), (n_proj, a.shape[1]))
    d = d / jnp.linalg.norm(d, axis=1, keepdims=True)
    pa = jnp.sort(a @ d.T, axis=0)
    pb = jnp.sort(b @ d.T, axis=0)
    return float(jnp.sqrt(jnp.mean((pa - pb) ** 2)))


@pytest.fixture(scope="module")
def reference():
    x, _ = gmm.sample(jax.random.key(7), MIXTURE, N_SAMPLES)
    return x


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_noise_level_inverses_round_trip(name):
    sde = SDES[name]
    t = jnp.linspace(1e-3, 1.0, 11)
    m, s = sde.marginal_prob(jnp.ones((11, 1)), t)
    # float32: σ(1e-3) of sub-VP is ~2e-4, so the round trip carries a few 1e-4 relative error.
    np.testing.assert_allclose(fast_sampling.time_of_sigma(sde, s / m[:, 0]), t, rtol=5e-4)
    if name != "ve":
        lam = jnp.log(m[:, 0]) - jnp.log(s)
        np.testing.assert_allclose(fast_sampling._time_of_lambda(sde, lam), t, rtol=5e-4)


def test_karras_grid_endpoints_and_monotonicity():
    sigmas = fast_sampling.karras_sigmas(80.0, 0.002, 18)
    np.testing.assert_allclose([sigmas[0], sigmas[-1]], [80.0, 0.002], rtol=1e-5)
    assert bool(jnp.all(jnp.diff(sigmas) < 0))


@pytest.fixture(scope="module")
def pc_distances(reference):
    """Distance to the true mixture of the paper's PC samplers with N = 1000."""
    out = {}
    for name, sde in SDES.items():
        score_fn = gmm.get_score_fn(sde)
        predictor = "reverse_diffusion" if name == "ve" else "euler_maruyama"
        sample = sampling.get_pc_sampler(sde, score_fn, (N_SAMPLES, 2), predictor, "none", snr=0.16)
        x, _ = jax.jit(sample)(jax.random.key(0), MIXTURE)
        out[name] = sliced_wasserstein(x, reference)
    return out


@pytest.mark.parametrize(
    "name,kind,steps",
    [
        ("ve", "heun", 24),
        ("vp", "heun", 24),
        ("subvp", "heun", 24),
        ("vp", "dpm2", 24),
        ("subvp", "dpm2", 24),
        ("vp", "dpm3", 16),
        ("subvp", "dpm3", 16),
    ],
)
def test_few_step_samplers_match_pc_with_1000_steps(name, kind, steps, reference, pc_distances):
    sde = SDES[name]
    score_fn = gmm.get_score_fn(sde)
    if kind == "heun":
        sample = sampling.get_heun_sampler(sde, score_fn, (N_SAMPLES, 2), steps)
    else:
        order = int(kind[-1])
        sample = fast_sampling.get_dpm_solver_sampler(
            sde, score_fn, (N_SAMPLES, 2), steps, order=order
        )
    x, nfe = jax.jit(sample)(jax.random.key(0), MIXTURE)
    assert nfe <= 50
    distance = sliced_wasserstein(x, reference)
    # Both distances sit on the finite-sample floor (~0.011 for 4000 points); allow for its
    # fluctuation, not for a real bias: an under-resolved sampler (5 steps) is far outside.
    assert distance <= pc_distances[name] + 0.005, (distance, pc_distances[name])


def test_an_under_resolved_grid_is_detected(reference, pc_distances):
    sde = SDES["vp"]
    sample = fast_sampling.get_heun_sampler(sde, gmm.get_score_fn(sde), (N_SAMPLES, 2), 4)
    x, _ = jax.jit(sample)(jax.random.key(0), MIXTURE)
    assert sliced_wasserstein(x, reference) > pc_distances["vp"] + 0.05


def test_samples_do_not_depend_on_batch_mates():
    sde = SDES["vp"]
    score_fn = gmm.get_score_fn(sde)
    x8, _ = fast_sampling.get_dpm_solver_sampler(sde, score_fn, (8, 2), 5, order=3)(
        jax.random.key(3), MIXTURE
    )
    # Sample 0 alone, started from the same per-sample prior draw, is the same point.
    z0 = sde.prior_sampling(jax.random.split(jax.random.key(3), 8)[0], (2,))
    alone = fast_sampling.get_dpm_solver_sampler(sde, score_fn, (1, 2), 5, order=3)
    x1, _ = alone(jax.random.key(0), MIXTURE, z=z0[None])
    np.testing.assert_allclose(x8[0], x1[0], rtol=1e-5, atol=1e-6)


def test_invalid_arguments_raise():
    sde = SDES["ve"]
    score_fn = gmm.get_score_fn(sde)
    with pytest.raises(ValueError, match="VP or sub-VP"):
        fast_sampling.get_dpm_solver_sampler(sde, score_fn, (2, 2), 10)
    with pytest.raises(ValueError, match="order"):
        fast_sampling.get_dpm_solver_sampler(SDES["vp"], score_fn, (2, 2), 10, order=4)
    with pytest.raises(ValueError, match="eps"):
        fast_sampling.get_heun_sampler(sde, score_fn, (2, 2), 10, eps=1.5)
    with pytest.raises(ValueError, match="num_steps"):
        fast_sampling.get_heun_sampler(sde, score_fn, (2, 2), 0)
    with pytest.raises(ValueError, match="z has shape"):
        fast_sampling.get_heun_sampler(sde, score_fn, (2, 2), 3)(
            jax.random.key(0), MIXTURE, z=jnp.zeros((3, 2))
        )
