"""Samplers on exact Gaussian-mixture scores: every sampler must reproduce the mixture.

The test problem is a centred 2-D mixture of three correlated Gaussians plus 30 independent
N(0, 0.5²) dimensions (docs/testing.md): per-sample Langevin step sizes explode in two
dimensions wherever the score vanishes, while in 32 dimensions the norms concentrate as they do
for images. The 2-D marginal is judged through posterior-weighted moments, whose expectations are
exact (E[p(k|x)] = w_k, E[p(k|x) x] = w_k μ_k, E[p(k|x) x xᵀ] = w_k (Σ_k + μ_k μ_kᵀ)), against
standard errors from the sample itself; the spread of the extra dimensions measures calibration.
"""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax import gmm, sampling, sde_lib
from score_sde_jax.sampling import common, pc

WEIGHTS = [0.25, 0.25, 0.5]
MEANS = [[-1.5, 1.0], [1.5, 1.0], [0.0, -1.0]]  # weighted mean 0 (a VE prior needs it centred)
COVS = [[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.3]], [[0.4, 0.0], [0.0, 0.1]]]
EXTRA_DIMS, EXTRA_STD = 30, 0.5
DIM = 2 + EXTRA_DIMS
MIX = gmm.mixture(WEIGHTS, MEANS, COVS)
BATCH = 2000
# |estimate - target| <= Z_TOL standard errors for each of the 18 moment statistics.
Z_TOL = 5.0

PREDICTORS = ["euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none"]
CORRECTORS = ["langevin", "ald", "none"]


def make_sde(name, n=100):
    # σ_max = 10 keeps N small; the mixture's spread (~1.3) is negligible against it.
    return {
        "ve": lambda: sde_lib.VESDE(0.01, 10.0, n),
        "vp": lambda: sde_lib.VPSDE(0.1, 20.0, n),
        "subvp": lambda: sde_lib.subVPSDE(0.1, 20.0, n),
    }[name]()


def exact_score(sde):
    """Closed-form score of the perturbed [2-D mixture ⊕ 30 iid N(0, 0.5²)] at times t [B].

    The same as `gmm.get_score_fn` on the block-diagonal 32-D mixture (checked below), with
    2×2 algebra instead of a 32×32 Cholesky per point, which keeps the tests fast.
    """

    def score_fn(params, x, t, rng=None):
        del rng
        mean_coeff, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
        m, var = mean_coeff[:, 0], std**2
        cov = m[:, None, None, None] ** 2 * params["covs"] + var[:, None, None, None] * jnp.eye(2)
        a, b, c, d = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 0], cov[..., 1, 1]
        det = a * d - b * c
        prec = (
            jnp.stack([jnp.stack([d, -b], -1), jnp.stack([-c, a], -1)], -2) / det[..., None, None]
        )
        diff = x[:, None, :2] - m[:, None, None] * params["means"]  # [B, K, 2]
        prec_diff = jnp.einsum("bkij,bkj->bki", prec, diff)
        logits = params["log_weights"] - 0.5 * jnp.log(det) - 0.5 * jnp.sum(diff * prec_diff, -1)
        score_2d = -jnp.einsum("bk,bki->bi", jax.nn.softmax(logits, -1), prec_diff)
        extra_var = m**2 * EXTRA_STD**2 + var
        return jnp.concatenate([score_2d, -x[:, 2:] / extra_var[:, None]], axis=1)

    return score_fn


def block_mixture():
    means = np.zeros((3, DIM))
    means[:, :2] = MEANS
    covs = np.zeros((3, DIM, DIM))
    covs[:, :2, :2] = COVS
    covs[:, 2:, 2:] = EXTRA_STD**2 * np.eye(EXTRA_DIMS)
    return gmm.mixture(WEIGHTS, means, covs)


def moment_z_scores(x):
    """z-scores of the 18 posterior-weighted moments of x[:, :2] against their exact values."""
    x2 = np.asarray(x[:, :2], np.float64)
    post = np.exp(
        np.asarray(gmm.class_log_posterior(MIX, jnp.asarray(x2, jnp.float32)), np.float64)
    )
    second = np.stack([x2[:, 0] ** 2, x2[:, 0] * x2[:, 1], x2[:, 1] ** 2], -1)
    terms = np.concatenate(
        [post, (post[:, :, None] * x2[:, None]).reshape(len(x2), -1),
         (post[:, :, None] * second[:, None]).reshape(len(x2), -1)], axis=1
    )  # fmt: skip
    w, mu, cov = np.array(WEIGHTS), np.array(MEANS), np.array(COVS)
    sec = cov + mu[:, :, None] * mu[:, None, :]
    target = np.concatenate(
        [w, (w[:, None] * mu).ravel(),
         (w[:, None] * np.stack([sec[:, 0, 0], sec[:, 0, 1], sec[:, 1, 1]], -1)).ravel()]
    )  # fmt: skip
    se = terms.std(0) / np.sqrt(len(terms))
    return (terms.mean(0) - target) / se


def check_mixture(x):
    x = np.asarray(x)
    assert np.isfinite(x).all()
    z = moment_z_scores(x)
    assert np.abs(z).max() < Z_TOL, f"moment z-scores {np.round(z, 1)}"


def extra_spread(x):
    """Std of the 30 extra dimensions relative to the data's 0.5 (1 = calibrated)."""
    return float(np.asarray(x)[:, 2:].std() / EXTRA_STD)


def test_exact_score_matches_gmm_module():
    x = 2.0 * jax.random.normal(jax.random.key(0), (16, DIM))
    t = jax.random.uniform(jax.random.key(1), (16,), minval=1e-3, maxval=1.0)
    # VP exercises both the mean coefficient and the std, the only way the SDE enters.
    sde = make_sde("vp")
    want = jax.jit(gmm.get_score_fn(sde))(block_mixture(), x, t)
    got = exact_score(sde)(MIX, x, t)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ----------------------------------------------------------------------------------------------
# 1. marginal_prob against a fine Euler–Maruyama simulation of the forward SDE.
# ----------------------------------------------------------------------------------------------


def marginal_std(sde, t):
    return float(sde.marginal_prob(jnp.ones((1, 1)), t)[1][0])


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_marginal_prob_matches_forward_simulation(name):
    sde = make_sde(name)
    n_paths, n_steps, checkpoints = 4000, 2000, (200, 1000, 2000)  # t = 0.1, 0.5, 1
    x0, _ = gmm.sample(jax.random.key(0), MIX, n_paths)
    dt = sde.T / n_steps

    @jax.jit
    def simulate(x0, rng):
        def step(x, inputs):
            i, key = inputs
            drift, diffusion = sde.sde(x, jnp.full((n_paths,), i * dt))
            x = x + drift * dt + diffusion[:, None] * jnp.sqrt(dt) * jax.random.normal(key, x.shape)
            return x, x

        keys = jax.random.split(rng, n_steps)
        return jax.lax.scan(step, x0, (jnp.arange(n_steps), keys))[1]

    path = simulate(x0, jax.random.key(1))
    x0 = np.asarray(x0, np.float64)
    for k in checkpoints:
        xt = np.asarray(path[k - 1], np.float64)
        t = jnp.full((1,), k * dt)
        mean_coeff = float(sde.marginal_prob(jnp.ones((1, 1)), t)[0][0, 0])
        # The kernel's variance is std(t)² - std(0)²: VE's marginal_prob returns σ(t), leaving
        # out σ(0)² = σ_min² (the paper's approximation, Eq. 31); std(0) = 0 for VP and sub-VP.
        std = float(np.sqrt(marginal_std(sde, t) ** 2 - marginal_std(sde, jnp.zeros((1,))) ** 2))
        # x(t) = m x(0) + s z: regress x(t) on x(0), then the residual's spread.
        slope = np.sum(x0 * xt) / np.sum(x0**2)
        resid_std = np.std(xt - slope * x0)
        slope_se = resid_std / np.sqrt(np.sum(x0**2))
        std_se = resid_std / np.sqrt(2 * x0.size)
        # Tolerance: 5 standard errors plus 1 % for the Euler–Maruyama bias (dt = 5e-4).
        assert abs(slope - mean_coeff) < 5 * slope_se + 0.01 * mean_coeff, (k, slope, mean_coeff)
        assert abs(resid_std - std) < 5 * std_se + 0.01 * std, (k, resid_std, std)


# ----------------------------------------------------------------------------------------------
# 2. Every predictor × corrector combination reproduces the mixture.
# ----------------------------------------------------------------------------------------------


def _combinations():
    for name in ["ve", "vp", "subvp"]:
        for predictor in PREDICTORS:
            for corrector in CORRECTORS:
                if predictor == corrector == "none":
                    continue
                if predictor == "ancestral_sampling" and name == "subvp":
                    continue  # undefined for sub-VP: ValueError, tested below
                yield name, predictor, corrector, False
    # The probability-flow ODE stepped by the PC predictors (first order, so VE needs N = 200).
    yield "vp", "euler_maruyama", "none", True
    yield "ve", "reverse_diffusion", "none", True


COMBINATIONS = list(_combinations())


def _settings(name, predictor, corrector, probability_flow):
    """(N, snr, n_steps, spread tolerance) for one combination."""
    if probability_flow and name == "ve":
        return 200, 0.16, 1, 0.10
    if predictor != "none":
        # A correct corrector at snr 0.16 leaves the extra dimensions ~4–7 % too wide.
        return 100, 0.16, 1, 0.10
    # Corrector-only sampling (NCSN-style) needs more, larger steps to follow the annealing;
    # the larger snr costs a ~10 % wider spread. ALD's step ∝ σ_t², which for sub-VP is far
    # below the marginal's scale at small t, so it needs still more iterations there.
    if name == "subvp" and corrector == "ald":
        return 200, 0.5, 5, 0.15
    return 100, 0.3, 5, 0.15


@functools.cache
def pc_results(name):
    """(x, nfe) of every combination for one SDE, compiled together as one program.

    One program per SDE rather than one per combination saves about a third of the
    compilation time, which dominates these tests.
    """
    samplers = {}
    for combo in COMBINATIONS:
        if combo[0] == name:
            n, snr, n_steps, _ = _settings(*combo)
            sde = make_sde(name, n)
            samplers[combo] = sampling.get_pc_sampler(
                sde, exact_score(sde), (BATCH, DIM), combo[1], combo[2], snr,
                n_steps=n_steps, probability_flow=combo[3],
            )  # fmt: skip
    run_all = jax.jit(lambda rng, params: {k: s(rng, params) for k, s in samplers.items()})
    return jax.device_get(run_all(jax.random.key(0), MIX))


@pytest.mark.parametrize("combo", COMBINATIONS, ids=lambda c: "-".join(map(str, c)))
def test_pc_sampler_reproduces_mixture(combo):
    name, predictor, corrector, _ = combo
    n, _, n_steps, spread_tol = _settings(*combo)
    x, nfe = pc_results(name)[combo]
    check_mixture(x)
    assert abs(extra_spread(x) - 1.0) < spread_tol
    n_pred = 0 if predictor == "none" else n
    n_corr = 0 if corrector == "none" else (n - 1) * n_steps
    assert nfe == n_pred + n_corr


def test_wrong_score_fails_the_mixture_check():
    sde = make_sde("vp")
    half_score = lambda params, x, t: 0.5 * exact_score(sde)(params, x, t)  # noqa: E731
    sample = sampling.get_pc_sampler(sde, half_score, (BATCH, DIM), "euler_maruyama", "none", 0.16)
    x, _ = sample(jax.random.key(0), MIX)
    with pytest.raises(AssertionError):
        check_mixture(x)
    assert extra_spread(x) > 1.2


def test_registered_corrector_with_wrong_noise_fails_calibration(monkeypatch):
    # Langevin with noise sqrt(ε) instead of sqrt(2ε) (testing notes: ~23 % too narrow),
    # added through the public registry. The real corrector passes the same check in
    # test_pc_sampler_reproduces_mixture[vp-reverse_diffusion-langevin-False].
    monkeypatch.setattr(pc, "_CORRECTORS", dict(pc._CORRECTORS))

    @sampling.register_corrector("half_noise_langevin")
    def half_noise(sde, score_fn, snr, n_steps=1, batch_pooled=False):
        def update(rng, params, x, t):
            grad = score_fn(params, x, t)
            z = common.normal_like(rng, x)
            norm = lambda v: jnp.linalg.norm(v, axis=-1)  # noqa: E731
            step = 2 * sampling.langevin_alpha(sde, t) * (snr * norm(z) / norm(grad)) ** 2
            x_mean = x + step[:, None] * grad
            return x_mean + jnp.sqrt(step)[:, None] * z, x_mean

        return update

    assert "half_noise_langevin" in sampling.corrector_names()
    sde = make_sde("vp")
    sample = sampling.get_pc_sampler(
        sde, exact_score(sde), (BATCH, DIM), "reverse_diffusion", "half_noise_langevin", 0.16
    )
    x, nfe = sample(jax.random.key(0), MIX)
    assert nfe == 100 + 99
    assert extra_spread(x) < 0.9


# ----------------------------------------------------------------------------------------------
# 3. diffrax samplers.
# ----------------------------------------------------------------------------------------------

SDE_SAMPLER_CASES = [("ve", "euler"), ("subvp", "euler"), ("vp", "heun")]
SDE_SAMPLER_BATCH = 1000


@functools.cache
def diffrax_results():
    """ODE samples for each SDE and reverse-SDE samples for each case, one program."""
    samplers = {}
    for name in ["ve", "vp", "subvp"]:
        sde = make_sde(name)
        samplers["ode", name] = sampling.get_ode_sampler(sde, exact_score(sde), (BATCH, DIM))
    for name, method in SDE_SAMPLER_CASES:
        sde = make_sde(name)
        samplers[name, method] = sampling.get_sde_sampler(
            sde, exact_score(sde), (SDE_SAMPLER_BATCH, DIM), method=method
        )
    run_all = jax.jit(lambda rng, params: {k: s(rng, params) for k, s in samplers.items()})
    return jax.device_get(run_all(jax.random.key(0), MIX))


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_ode_sampler_reproduces_mixture(name):
    x, nfe = diffrax_results()["ode", name]
    check_mixture(x)
    # The ODE is exact in distribution: only solver error and sampling noise remain.
    assert abs(extra_spread(x) - 1.0) < 0.01
    assert nfe.shape == (BATCH,)
    # dopri5 (the default) at rtol = atol = 1e-5 takes ~10–20 adaptive steps (6 evaluations each).
    assert 30 < float(np.mean(nfe)) < 300


@pytest.mark.parametrize("name,method", SDE_SAMPLER_CASES)
def test_sde_sampler_reproduces_mixture(name, method):
    x, nfe = diffrax_results()[name, method]
    check_mixture(x)
    assert abs(extra_spread(x) - 1.0) < 0.05
    assert nfe == {"euler": 100, "heun": 200}[method] + 1  # + Tweedie denoising


def test_reported_nfe_counts_actual_score_calls():
    sde = make_sde("vp", 24)  # N > beta_max: the DDPM chain of reverse diffusion exists
    shape = (1, DIM)
    counters = [collections.Counter() for _ in range(5)]

    def counting(counter):
        def score_fn(params, x, t, rng=None):
            jax.debug.callback(lambda: counter.update(["calls"]))
            return exact_score(sde)(params, x, t)

        return score_fn

    sc = [counting(c) for c in counters]
    samplers = [
        sampling.get_pc_sampler(sde, sc[0], shape, "reverse_diffusion", "langevin", 0.16, 2),
        sampling.get_pc_sampler(sde, sc[1], shape, "euler_maruyama", "ald", 0.16, 3,
                                reproduce_original=True),
        sampling.get_ode_sampler(sde, sc[2], shape, method="tsit5", denoise=True),
        sampling.get_ode_sampler(sde, sc[3], shape, method="heun", num_steps=10),
        # Tolerances so tight that the first step is rejected: diffrax then pays the FSAL first
        # stage again for every attempt at it.
        sampling.get_ode_sampler(sde, sc[4], shape, method="tsit5", rtol=1e-9, atol=1e-9),
    ]  # fmt: skip
    outputs = jax.jit(lambda rng, params: [s(rng, params) for s in samplers])(
        jax.random.key(0), MIX
    )
    jax.block_until_ready(outputs)
    jax.effects_barrier()
    reported = [int(np.sum(nfe)) for _, nfe in outputs]
    assert reported == [c["calls"] for c in counters]
    # PC: N predictor steps and N - 1 corrector rounds; the original order corrects N times.
    # Heun: 2 evaluations per step; Tsit5: 6 per step + 1 at the start (+ 1 to denoise).
    assert reported[:2] == [24 + 23 * 2, 24 * (1 + 3)]
    assert reported[3] == 20
    assert (reported[2] - 2) % 6 == 0
    assert (reported[4] - 1) % 6 > 0  # more than the one first-stage evaluation at the start


# ----------------------------------------------------------------------------------------------
# 4. Batch composition.
# ----------------------------------------------------------------------------------------------


def test_samples_do_not_depend_on_batch_mates_unless_reproducing_original():
    sde = make_sde("ve", 20)
    rng = jax.random.key(0)
    keys = jax.random.split(rng, 8)
    mixed = jnp.concatenate([keys[:4], jax.random.split(jax.random.key(1), 8)[4:]])
    shape = (8, DIM)
    score_fn = exact_score(sde)
    for reproduce_original in [False, True]:
        sample = sampling.get_pc_sampler(
            sde, score_fn, shape, "reverse_diffusion", "langevin", 0.16,
            reproduce_original=reproduce_original,
        )  # fmt: skip
        a, _ = sample(keys, MIX)
        b, _ = sample(mixed, MIX)
        if reproduce_original:
            # The batch-pooled Langevin step couples the samples.
            assert np.abs(np.asarray(a[:4]) - np.asarray(b[:4])).max() > 1e-3
        else:
            np.testing.assert_array_equal(a[:4], b[:4])
            assert np.abs(np.asarray(a[4:]) - np.asarray(b[4:])).max() > 1e-3
            # One key is split into exactly these per-sample keys.
            np.testing.assert_array_equal(sample(rng, MIX)[0], a)
    # Per-sample adaptive steps: a batch-mate never changes a sample's step sizes.
    sample = sampling.get_ode_sampler(sde, score_fn, shape)
    (a, nfe_a), (b, nfe_b) = sample(keys, MIX), sample(mixed, MIX)
    np.testing.assert_allclose(a[:4], b[:4], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(nfe_a[:4], nfe_b[:4])


# ----------------------------------------------------------------------------------------------
# 5. Bad input.
# ----------------------------------------------------------------------------------------------


def test_bad_arguments_raise_value_errors():
    ve, vp, subvp = make_sde("ve"), make_sde("vp"), make_sde("subvp")
    score_fn = exact_score(vp)
    shape = (4, DIM)
    with pytest.raises(ValueError, match="valid names.*euler_maruyama"):
        sampling.get_pc_sampler(vp, score_fn, shape, "rk4", "none", 0.1)
    with pytest.raises(ValueError, match="valid names.*langevin"):
        sampling.get_pc_sampler(vp, score_fn, shape, "euler_maruyama", "hmc", 0.1)
    with pytest.raises(ValueError, match="valid names.*tsit5"):
        sampling.get_ode_sampler(vp, score_fn, shape, method="rk45")
    with pytest.raises(ValueError, match="valid names.*heun"):
        sampling.get_sde_sampler(vp, score_fn, shape, method="shark")
    for eps in [0.0, -1e-3, 1.0, 1.5]:
        with pytest.raises(ValueError, match="eps"):
            sampling.get_pc_sampler(vp, score_fn, shape, "euler_maruyama", "none", 0.1, eps=eps)
        with pytest.raises(ValueError, match="eps"):
            sampling.get_ode_sampler(ve, score_fn, shape, eps=eps)
        with pytest.raises(ValueError, match="eps"):
            sampling.get_sde_sampler(subvp, score_fn, shape, eps=eps)
    for n in [0, -5]:
        with pytest.raises(ValueError, match="N"):
            sde_lib.VPSDE(0.1, 20.0, n)
    with pytest.raises(ValueError, match="num_steps"):
        sampling.get_sde_sampler(vp, score_fn, shape, num_steps=0)
    with pytest.raises(ValueError, match="num_steps"):
        sampling.get_ode_sampler(vp, score_fn, shape, method="euler")
    with pytest.raises(ValueError, match="sub-VP|subVPSDE"):
        sampling.get_pc_sampler(subvp, score_fn, shape, "ancestral_sampling", "none", 0.1)
    with pytest.raises(ValueError, match="probability"):
        sampling.get_pc_sampler(
            vp, score_fn, shape, "ancestral_sampling", "none", 0.1, probability_flow=True
        )
    # At N <= beta_max the DDPM chain's alpha_i = 1 - beta_i reaches 0: NaN samples, refused.
    coarse_vp, coarse_subvp = sde_lib.VPSDE(0.1, 20.0, 20), sde_lib.subVPSDE(0.1, 20.0, 20)
    for sde, predictor, corrector in [
        (coarse_vp, "reverse_diffusion", "none"),
        (coarse_vp, "ancestral_sampling", "none"),
        (coarse_vp, "euler_maruyama", "langevin"),
        (coarse_subvp, "euler_maruyama", "ald"),
    ]:
        with pytest.raises(ValueError, match="N ≥ 21"):
            sampling.get_pc_sampler(sde, score_fn, shape, predictor, corrector, 0.1)
    sampling.get_pc_sampler(
        sde_lib.VPSDE(0.1, 20.0, 21), score_fn, shape, "reverse_diffusion", "langevin", 0.1
    )
    sampling.get_pc_sampler(coarse_vp, score_fn, shape, "euler_maruyama", "none", 0.1)
    with pytest.raises(ValueError, match="snr"):
        sampling.get_pc_sampler(vp, score_fn, shape, "none", "langevin", 0.0)
    with pytest.raises(ValueError, match="n_steps"):
        sampling.get_pc_sampler(vp, score_fn, shape, "none", "langevin", 0.1, n_steps=0)
    with pytest.raises(ValueError, match="shape"):
        sampling.get_pc_sampler(vp, score_fn, (4,), "euler_maruyama", "none", 0.1)
    z = jnp.zeros((4, DIM + 1))
    rng = jax.random.key(0)
    for sample in [
        sampling.get_pc_sampler(vp, score_fn, shape, "euler_maruyama", "none", 0.1),
        sampling.get_ode_sampler(vp, score_fn, shape),
        sampling.get_sde_sampler(vp, score_fn, shape),
    ]:
        with pytest.raises(ValueError, match="shape"):
            sample(rng, MIX, z)
        with pytest.raises(ValueError, match="per-sample keys"):
            sample(jax.random.split(rng, 3), MIX)
