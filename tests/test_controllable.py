"""Controllable generation on closed-form targets: Gaussians and Gaussian mixtures whose scores,
noisy-class posteriors and conditionals are exact (score_sde_jax.gmm and eigen-decomposed
Gaussians), so every sampler is judged against the true conditional distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax import gmm, sde_lib
from score_sde_jax.models import wideresnet
from score_sde_jax.sampling import controllable


def gaussian_score_fn(sde):
    """Exact score of N(μ, U diag(λ) Uᵀ) perturbed by ``sde``, for points [B, ..., d].

    The eigenbasis makes the perturbed precision U diag(1/(m²λ + s²)) Uᵀ cheap at every t.
    """

    def score_fn(params, x, t, rng=None):
        del rng
        mu, lam, u = params
        expand = (slice(None),) + (None,) * (x.ndim - 1)
        m = sde.marginal_prob(jnp.ones((x.shape[0], 1)), t)[0][:, 0][expand]
        s = sde.marginal_prob(x, t)[1][expand]
        return -(((x - m * mu) @ u) / (m**2 * lam + s**2)) @ u.T

    return score_fn


def gaussian_params(mean, cov):
    lam, u = np.linalg.eigh(cov)
    return tuple(jnp.asarray(a, jnp.float32) for a in (mean, lam, u))


def test_gaussian_score_helper_matches_the_mixture_module():
    sde = sde_lib.VPSDE(0.1, 20.0, 10)
    cov = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]])
    mean = np.array([0.2, -0.1, 0.3])
    x = jax.random.normal(jax.random.key(0), (5, 3))
    t = jnp.linspace(0.01, 1.0, 5)
    expected = gmm.get_score_fn(sde)(gmm.mixture([1.0], [mean], [cov]), x, t)
    got = gaussian_score_fn(sde)(gaussian_params(mean, cov), x, t)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Class-conditional sampling: the exact score plus the exact noisy-class posterior of a mixture
# is the exact score of the chosen component, so samples must come from that component only.
# ----------------------------------------------------------------------------------------------

WEIGHTS = np.array([0.5, 0.3, 0.2])
# Centred: a VE prior N(0, σ_max²) then matches the true time-T marginal (docs/testing.md).
MEANS = np.array([[-1.5, -1.0], [1.5, -1.0], [0.0, 1.6]])
MEANS = MEANS - WEIGHTS @ MEANS
COVS = np.stack(
    [[[0.2, 0.1], [0.1, 0.15]], [[0.1, -0.05], [-0.05, 0.2]], [[0.12, 0.0], [0.0, 0.12]]]
)
PER_CLASS = 500


@pytest.fixture(scope="module")
def mixture():
    return gmm.mixture(WEIGHTS, MEANS, COVS)


@pytest.mark.parametrize(
    "sde, predictor",
    [
        (sde_lib.VESDE(0.01, 10.0, 200), "reverse_diffusion"),
        (sde_lib.VPSDE(0.1, 20.0, 200), "euler_maruyama"),
        (sde_lib.subVPSDE(0.1, 20.0, 200), "euler_maruyama"),
    ],
    ids=["VE", "VP", "subVP"],
)
def test_conditional_sampling_draws_the_selected_component_only(mixture, sde, predictor):
    labels = jnp.repeat(jnp.arange(3), PER_CLASS)
    sampler = controllable.get_pc_conditional_sampler(
        sde,
        gmm.get_score_fn(sde),
        gmm.get_classifier_fn(sde),
        (labels.shape[0], 2),
        predictor,
        "none",
        snr=0.16,
    )
    x = np.asarray(sampler(jax.random.key(0), mixture, mixture, labels))
    posterior = np.exp(np.asarray(gmm.class_log_posterior(mixture, jnp.asarray(x))))
    for k in range(3):
        xk, pk = x[np.asarray(labels) == k], posterior[np.asarray(labels) == k]
        # Component weights of the samples: all mass on class k (components overlap < 1e-3).
        assert pk[:, k].mean() > 0.99
        assert np.mean(pk.argmax(1) == k) > 0.99
        # Standard errors of the mean ≈ 0.02, of the covariance entries ≈ 0.013.
        np.testing.assert_allclose(xk.mean(0), MEANS[k], atol=0.07)
        np.testing.assert_allclose(np.cov(xk.T), COVS[k], atol=0.045)


def test_guided_score_adds_the_scaled_classifier_gradient(mixture):
    # For a mixture ∇log p_t(y | x) = s_y - s, so the guided score is s + w (s_y - s), with s_y
    # the score of the perturbed component y: -(m² Σ_y + s² I)⁻¹ (x - m μ_y).
    sde = sde_lib.subVPSDE(0.1, 20.0, 10)
    x = jax.random.normal(jax.random.key(0), (4, 2))
    t = jnp.array([0.01, 0.1, 0.5, 1.0])
    labels = np.array([0, 1, 2, 0])
    m = np.exp(np.asarray(sde.log_mean_coeff(t)))
    std = np.asarray(sde.marginal_prob(x, t)[1])
    component = np.stack(
        [
            -np.linalg.solve(
                m[b] ** 2 * COVS[labels[b]] + std[b] ** 2 * np.eye(2),
                np.asarray(x[b]) - m[b] * MEANS[labels[b]],
            )
            for b in range(4)
        ]
    )
    score = gmm.get_score_fn(sde)(mixture, x, t)
    w = 2.5
    guided = controllable.get_guided_score_fn(gmm.get_score_fn(sde), gmm.get_classifier_fn(sde), w)
    np.testing.assert_allclose(
        guided((mixture, mixture, jnp.asarray(labels)), x, t),
        score + w * (component - score),
        rtol=1e-4,
        atol=1e-3,
    )


# ----------------------------------------------------------------------------------------------
# Inpainting a correlated Gaussian: the true conditional of the unknown coordinates is closed
# form. Replacement is approximate, so the test asserts movement toward the truth and bounds
# the remaining error (measured values in the comments).
# ----------------------------------------------------------------------------------------------

D, KNOWN, EXTRA = 6, 3, 24  # 6 correlated coordinates (3 known) + independent ones
KNOWN_VALUES = np.array([1.5, -1.0, 1.0])


@pytest.fixture(scope="module")
def inpainting_problem():
    a = np.random.default_rng(0).normal(size=(D, D))
    cov = a @ a.T / D + 0.05 * np.eye(D)
    cov /= np.sqrt(np.outer(np.diag(cov), np.diag(cov)))  # unit variances
    # The extra independent N(0, 1) coordinates keep the Langevin step size 2(r‖z‖/‖s‖)² sane
    # (in a few dimensions ‖s‖ ≈ 0 near the mean blows it up; docs/testing.md).
    full = np.eye(D + EXTRA)
    full[:D, :D] = cov
    s_kk, s_uk, s_uu = cov[:KNOWN, :KNOWN], cov[KNOWN:, :KNOWN], cov[KNOWN:, KNOWN:]
    cond_mean = s_uk @ np.linalg.solve(s_kk, KNOWN_VALUES)
    cond_cov = s_uu - s_uk @ np.linalg.solve(s_kk, s_uk.T)
    return gaussian_params(np.zeros(D + EXTRA), full), s_uu, cond_mean, cond_cov


@pytest.mark.parametrize(
    "sde, predictor, corrector, mean_frac",
    [
        # Measured (2000 samples): unknown means (-0.11, -0.72, 0.95) vs conditional
        # (-0.10, -0.77, 1.00) and unconditional 0; variances (1.06, 0.41, 0.51) vs conditional
        # (0.89, 0.29, 0.36) and unconditional 1 (Langevin at snr 0.16 widens by ≈ 12 %).
        (sde_lib.VESDE(0.01, 20.0, 300), "reverse_diffusion", "langevin", 0.1),
        # Measured: means (-0.15, -0.49, 0.65): predictor-only replacement gets about 2/3 of the
        # way; variances (0.93, 0.43, 0.46).
        (sde_lib.VPSDE(0.1, 20.0, 300), "euler_maruyama", "none", 0.5),
    ],
    ids=["VE-rd-langevin", "VP-em"],
)
def test_inpainting_keeps_known_coordinates_and_moves_toward_the_conditional(
    inpainting_problem, sde, predictor, corrector, mean_frac
):
    params, s_uu, cond_mean, cond_cov = inpainting_problem
    batch = 2000
    data = np.array(jax.random.normal(jax.random.key(3), (batch, D + EXTRA)))
    data[:, :KNOWN] = KNOWN_VALUES
    mask = np.zeros((1, D + EXTRA), np.float32)
    mask[:, :KNOWN] = 1.0
    inpaint = controllable.get_pc_inpainter(
        sde, gaussian_score_fn(sde), data.shape, predictor, corrector, snr=0.16
    )
    x = np.asarray(inpaint(jax.random.key(0), params, data, mask))
    np.testing.assert_array_equal(x[:, :KNOWN], data[:, :KNOWN])
    unknown = x[:, KNOWN:D].astype(np.float64)
    # The mean moves from the unconditional 0 toward the conditional mean (shift 1.0).
    assert np.abs(unknown.mean(0) - cond_mean).max() < mean_frac * np.abs(cond_mean).max()
    # Variances shrink toward the conditional ones where conditioning matters (gaps 0.71, 0.64;
    # the first coordinate's gap 0.11 is below the Langevin widening).
    gap = np.diag(s_uu) - np.diag(cond_cov)
    informative = gap > 0.3
    assert informative.sum() == 2
    var_error = np.abs(unknown.var(0) - np.diag(cond_cov))
    assert np.all(var_error[informative] < 0.35 * gap[informative])
    # The independent extra coordinates keep their N(0, 1) law.
    assert abs(x[:, D:].var() - 1.0) < 0.15


def test_inpainting_samples_do_not_depend_on_batch_mates():
    sde = sde_lib.VESDE(0.01, 5.0, 10)
    params = gaussian_params(np.zeros(4), np.eye(4))
    data = jax.random.normal(jax.random.key(0), (6, 4))
    mask = jnp.array([1.0, 0.0, 1.0, 0.0])
    keys = jax.random.split(jax.random.key(1), 6)
    inpaint = controllable.get_pc_inpainter(
        sde, gaussian_score_fn(sde), (6, 4), "reverse_diffusion", "langevin", 0.16
    )
    # Per-sample keys and per-sample Langevin steps: permuting the batch permutes the result.
    order = jnp.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(
        inpaint(keys, params, data, mask)[order],
        inpaint(keys[order], params, data[order], mask),
        rtol=1e-5,
        atol=1e-6,
    )


# ----------------------------------------------------------------------------------------------
# Colorization of images with i.i.d. Gaussian RGB pixels whose gray level and colour correlate.
# ----------------------------------------------------------------------------------------------

M = controllable.COLOR_DECOUPLING.astype(np.float64)
# Pixel law in decoupled coordinates (√3·gray, chroma1, chroma2): strongly correlated.
_L = np.array([[0.75, 0.0, 0.0], [0.3, 0.2, 0.0], [-0.15, 0.05, 0.2]])
PIXEL_COV = M @ (_L @ _L.T) @ M.T
PIXEL_MEAN = np.array([0.1, 0.0, -0.1])
GRAY = 0.6


def test_decoupling_matrix_is_the_original_orthonormal_one():
    np.testing.assert_allclose(M @ M.T, np.eye(3), atol=1e-6)
    # The values stored in the original (docs/original_code.md#controllable-generation).
    original = [
        [0.57735014, -0.81649649, 4.7e-8],
        [0.57735026, 0.40824834, 0.70710671],
        [0.57735026, 0.40824822, -0.70710683],
    ]
    np.testing.assert_allclose(M, original, atol=2e-7)
    rgb = jax.random.normal(jax.random.key(0), (2, 3, 3))
    np.testing.assert_allclose(
        controllable.couple_colors(controllable.decouple_colors(rgb)), rgb, atol=1e-6
    )


def test_colorization_keeps_gray_and_moves_colour_toward_the_conditional():
    sde = sde_lib.VESDE(0.01, 10.0, 300)
    batch = 1000
    colorize = controllable.get_pc_colorizer(
        sde, gaussian_score_fn(sde), (batch, 2, 2, 3), "reverse_diffusion", "none", snr=0.16
    )
    gray = np.full((batch, 2, 2, 1), GRAY, np.float32)
    # An RGB input counts through its channel mean.
    rgb_input = gray + np.array([0.1, -0.3, 0.2], np.float32)
    x = np.asarray(colorize(jax.random.key(0), gaussian_params(PIXEL_MEAN, PIXEL_COV), rgb_input))
    np.testing.assert_allclose(x.mean(-1, keepdims=True), gray, atol=1e-6)

    # True conditional of a pixel given its gray level a·x, a = (1, 1, 1)/3.
    a = np.ones(3) / 3
    gain = PIXEL_COV @ a / (a @ PIXEL_COV @ a)
    cond_mean = PIXEL_MEAN + gain * (GRAY - a @ PIXEL_MEAN)
    cond_cov = PIXEL_COV - np.outer(gain, PIXEL_COV @ a)
    chroma = M[:, 1:]  # the unknown (colour) coordinates
    pixels = x.reshape(-1, 3).astype(np.float64) @ chroma
    mean_error = np.abs(pixels.mean(0) - cond_mean @ chroma).max()
    cov_error = np.abs(np.cov(pixels.T) - chroma.T @ cond_cov @ chroma).max()
    prior_mean_error = np.abs((PIXEL_MEAN - cond_mean) @ chroma).max()  # 0.42
    prior_cov_error = np.abs(chroma.T @ (PIXEL_COV - cond_cov) @ chroma).max()  # 0.09
    # Measured: chroma mean (0.231, -0.114) vs true (0.293, -0.137) and unconditional
    # (-0.122, 0.071), i.e. error 0.062; chroma covariance error 0.002.
    assert mean_error < 0.25 * prior_mean_error
    assert cov_error < 0.15 * prior_cov_error


# ----------------------------------------------------------------------------------------------
# Latent codes through the probability-flow ODE.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sde", [sde_lib.VESDE(0.01, 10.0), sde_lib.VPSDE(0.1, 20.0)], ids=["VE", "VP"]
)
def test_encode_then_decode_returns_the_input_and_encoding_is_deterministic(mixture, sde):
    x, _ = gmm.sample(jax.random.key(0), mixture, 16)
    encode = controllable.get_encoder(sde, gmm.get_score_fn(sde))
    decode = controllable.get_decoder(sde, gmm.get_score_fn(sde))
    z, nfe = encode(mixture, x)
    z_again, _ = encode(mixture, x)
    np.testing.assert_array_equal(z, z_again)
    assert nfe.shape == (16,) and int(nfe.min()) > 20
    # The code has the prior's scale (std σ_max for VE, 1 for VP): the data are forgotten.
    prior_std = 10.0 if isinstance(sde, sde_lib.VESDE) else 1.0
    assert 0.5 < float(jnp.std(z)) / prior_std < 1.5
    x_back, _ = decode(mixture, z)
    np.testing.assert_allclose(x_back, x, atol=2e-3)
    # A code depends on its own data point only.
    np.testing.assert_allclose(encode(mixture, x[::-1])[0], z[::-1], rtol=1e-4, atol=1e-4)


def test_encoding_takes_the_ode_sampler_solver_names(mixture):
    sde = sde_lib.VPSDE(0.1, 20.0)
    x, _ = gmm.sample(jax.random.key(0), mixture, 8)
    z, _ = controllable.get_encoder(sde, gmm.get_score_fn(sde))(mixture, x)
    for method in ["euler", "midpoint"]:
        encode = controllable.get_encoder(sde, gmm.get_score_fn(sde), method=method, num_steps=200)
        z_fixed, nfe = encode(mixture, x)
        np.testing.assert_allclose(z_fixed, z, atol=0.05)
        np.testing.assert_array_equal(nfe, 200 if method == "euler" else 400)
    with pytest.raises(ValueError, match="num_steps"):
        controllable.get_decoder(sde, gmm.get_score_fn(sde), method="euler")


def test_interpolate_is_spherical():
    z0 = jnp.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    z1 = jnp.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])  # orthogonal; parallel
    path = controllable.interpolate(z0, z1, jnp.array([0.0, 0.5, 1.0]))
    assert path.shape == (3, 2, 3)
    np.testing.assert_allclose(path[0], z0, atol=1e-6)
    np.testing.assert_allclose(path[2], z1, atol=1e-6)
    np.testing.assert_allclose(path[1, 0], [0.5**0.5, 0.5**0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(path[1, 1], [2.0, 0.0, 0.0], atol=1e-6)
    # Between independent Gaussian codes the norm stays typical (a straight line loses ~30 %).
    a, b = jax.random.normal(jax.random.key(0), (2, 1, 4096))
    mid = controllable.interpolate(a, b, jnp.array([0.5]))[0]
    assert abs(float(jnp.linalg.norm(mid) / jnp.linalg.norm(a)) - 1.0) < 0.05


# ----------------------------------------------------------------------------------------------
# The WideResNet adapter and argument checking.
# ----------------------------------------------------------------------------------------------


def test_wideresnet_classifier_fn_maps_any_sde_to_ve_noise_levels():
    classifier = wideresnet.create_classifier(1, 1, 3)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    # Random parameters from numpy: initializing the network (eager or jitted) costs ~20 s of CPU.
    shapes = jax.eval_shape(classifier.init, jax.random.key(1), x, jnp.ones(2))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: 0.3 * rng.normal(size=a.shape).astype(np.float32), shapes)
    logits = wideresnet.get_logit_fn(classifier)
    t = jnp.array([0.3, 0.7])

    ve = sde_lib.VESDE(0.01, 50.0)
    np.testing.assert_allclose(
        wideresnet.get_classifier_fn(classifier, ve)(params, x, t),
        logits(params, x, ve.sigma(t)),
        rtol=1e-5,
    )
    vp = sde_lib.VPSDE()
    m = jnp.exp(vp.log_mean_coeff(t))
    s = vp.marginal_prob(x, t)[1]
    np.testing.assert_allclose(
        wideresnet.get_classifier_fn(classifier, vp, centered=True)(params, x, t),
        logits(params, (x / m[:, None, None, None] + 1) / 2, s / m / 2),
        rtol=1e-4,
        atol=1e-5,
    )


def test_bad_arguments_raise_clear_errors(mixture):
    sde = sde_lib.VPSDE(0.1, 20.0, 5)
    score_fn = gmm.get_score_fn(sde)
    with pytest.raises(ValueError, match="reverse_diffusion"):
        controllable.get_pc_inpainter(sde, score_fn, (4, 2), "nope", "none", 0.16)
    with pytest.raises(ValueError, match="langevin"):
        controllable.get_pc_colorizer(sde, score_fn, (4, 1, 1, 3), "euler_maruyama", "x", 0.16)
    with pytest.raises(ValueError, match="eps"):
        controllable.get_pc_inpainter(sde, score_fn, (4, 2), "euler_maruyama", "none", 1, eps=2.0)
    with pytest.raises(ValueError, match="n_steps"):
        controllable.get_pc_inpainter(sde, score_fn, (4, 2), "euler_maruyama", "none", 1, 0)
    inpaint = controllable.get_pc_inpainter(sde, score_fn, (4, 2), "euler_maruyama", "none", 1)
    with pytest.raises(ValueError, match="data has shape"):
        inpaint(jax.random.key(0), mixture, jnp.zeros((3, 2)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="does not broadcast"):
        inpaint(jax.random.key(0), mixture, jnp.zeros((4, 2)), jnp.ones((3,)))
    with pytest.raises(ValueError, match="only 0"):
        inpaint(jax.random.key(0), mixture, jnp.zeros((4, 2)), jnp.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="RGB"):
        controllable.get_pc_colorizer(sde, score_fn, (4, 2), "euler_maruyama", "none", 1)
    colorize = controllable.get_pc_colorizer(
        sde, score_fn, (4, 1, 1, 3), "euler_maruyama", "none", 1
    )
    with pytest.raises(ValueError, match="gray has shape"):
        colorize(jax.random.key(0), mixture, jnp.zeros((4, 1, 1, 2)))
    sampler = controllable.get_pc_conditional_sampler(
        sde, score_fn, gmm.get_classifier_fn(sde), (4, 2), "euler_maruyama", "none", 1
    )
    with pytest.raises(ValueError, match="4 integer class indices"):
        sampler(jax.random.key(0), mixture, mixture, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        sampler(jax.random.key(0), mixture, mixture, jnp.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="tsit5"):
        controllable.get_encoder(sde, score_fn, method="rk4")
    with pytest.raises(ValueError, match="equal shape"):
        controllable.interpolate(jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.array([0.5]))
