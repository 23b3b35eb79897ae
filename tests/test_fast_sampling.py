"""Few-step samplers (Heun, DPM-Solver-2/3) against PC-1000 on the core tests' exact-score mixture.

Setting: the 2-D three-component mixture of tests/test_sampling.py (without its 30 extra
Gaussian dimensions, whose linear flow any ODE solver follows almost exactly), its exact score,
and the SDEs used there with N = 1000: VE (σ 0.01…10), VP and sub-VP (β 0.1…20).

Metric: the energy distance E = 2E|X-Y| - E|X-X'| - E|Y-Y'| (Székely & Rizzo 2013) between
the empirical distribution of n = 20 000 samples and the exact mixture, computed without a
reference sample from the closed-form CDFs of the mixture's 1-D projections
(`evaluation.energy_distance.MixtureEnergyDistance`; checked against pairwise distances below). Exact
samples have E[E] = μ₀ = (π/n) mean_θ ∫ F_θ (1 - F_θ) du, the floor; a sampler whose
distribution is off adds that offset's energy distance to it.

Tolerance: a sampler with at most 50 score evaluations passes if E_few ≤ E_PC1000 + 3 μ₀. Like
the Cramér–von Mises statistic, n·E converges in law (to a weighted sum of χ²₁ variables), so
its spread is a fixed multiple of μ₀ ∝ 1/n: over 1000 sets of 20 000 exact samples the standard
deviation was 0.64 μ₀, E₁ - E₂ exceeded 3 μ₀ for 0.27 % of pairs and E - μ₀ exceeded 3 μ₀ for
0.3 % of sets. At this n the criterion thus resolves excess distances of ~3 μ₀: Heun with 8
steps (VE, 17 NFE), DPM-Solver-2 with 8 and DPM-Solver-3 with 4 steps (sub-VP, 17 and 13 NFE)
fail it. Smaller differences need more samples than a unit test affords
(`python benchmarks/bench_samplers.py --sections accuracy` measures them at 100 000 points);
the noise-free check here is pathwise: each sampler's distance to a tight PF-ODE solve
(diffrax) from the same prior draws, and its order of convergence between the under-resolved
and the accepted step counts.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax import gmm, sampling, sde_lib
from score_sde_jax.evaluation.energy_distance import MixtureEnergyDistance
from score_sde_jax.sampling import few_step

# The 2-D part of the core tests' mixture (tests/test_sampling.py).
WEIGHTS = [0.25, 0.25, 0.5]
MEANS = [[-1.5, 1.0], [1.5, 1.0], [0.0, -1.0]]
COVS = [[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.3]], [[0.4, 0.0], [0.0, 0.1]]]

MIX = gmm.mixture(WEIGHTS, MEANS, COVS)
SDES = {
    "ve": sde_lib.VESDE(0.01, 10.0, 1000),
    "vp": sde_lib.VPSDE(0.1, 20.0, 1000),
    "subvp": sde_lib.subVPSDE(0.1, 20.0, 1000),
}
N_POINTS = 20_000
PATH_POINTS = 2000
MAX_NFE = 50
ENERGY = MixtureEnergyDistance(WEIGHTS, MEANS, COVS)
FLOOR = ENERGY.floor(N_POINTS)
TOLERANCE = 3 * FLOOR  # see the module docstring
# (SDE, sampler, steps): 49 score evaluations each.
ACCEPTED = [
    ("ve", "heun", 24),
    ("vp", "heun", 24),
    ("subvp", "heun", 24),
    ("vp", "dpm2", 24),
    ("subvp", "dpm2", 24),
    ("vp", "dpm3", 16),
    ("subvp", "dpm3", 16),
]
UNDER_RESOLVED = [("ve", "heun", 8), ("subvp", "dpm2", 8), ("subvp", "dpm3", 4)]
# (SDE, sampler, order, coarse steps, fine steps): runs of the two lists above.
ORDER_CASES = [
    ("ve", "heun", 2, 8, 24),
    ("subvp", "dpm2", 2, 8, 24),
    ("subvp", "dpm3", 3, 4, 16),
]


def _run_together(samplers, z):
    """{key: (x, nfe)} of several samplers from the same prior draw z, as one compiled program."""

    @jax.jit
    def run(params, z):
        return {key: f(jax.random.key(1), params, z=z) for key, f in samplers.items()}

    return jax.device_get(run(MIX, z))


def few_step_sampler(sde, kind, steps, shape):
    score_fn = gmm.get_score_fn_2d(sde)
    if kind == "heun":
        return sampling.get_heun_sampler(sde, score_fn, shape, steps)
    return sampling.get_dpm_solver_sampler(sde, score_fn, shape, steps, order=int(kind[-1]))


@pytest.fixture(scope="module")
def results():
    """{(SDE, sampler, steps): (E, nfe, RMS distance to the PF-ODE solution)}.

    Per SDE one program runs PC-1000 (key (SDE, 'pc', 1000)), the few-step samplers and, for
    the first PATH_POINTS prior draws, a tight PF-ODE solve (diffrax dopri5, tolerances 1e-6),
    all from the same prior draws.
    """
    out = {}
    shape = (N_POINTS, 2)
    for name, sde in SDES.items():
        samplers = {
            cfg: few_step_sampler(sde, cfg[1], cfg[2], shape)
            for cfg in ACCEPTED + UNDER_RESOLVED
            if cfg[0] == name
        }
        # The paper's sampler for continuous-time models (Algorithm 1), without corrector.
        predictor = "reverse_diffusion" if name == "ve" else "euler_maruyama"
        samplers[name, "pc", sde.N] = sampling.get_pc_sampler(
            sde, gmm.get_score_fn_2d(sde), shape, predictor, "none", snr=0.16
        )
        ode = sampling.get_ode_sampler(
            sde, gmm.get_score_fn_2d(sde), (PATH_POINTS, 2), rtol=1e-6, atol=1e-6, denoise=True
        )
        samplers[name, "ode", 0] = lambda rng, params, z, ode=ode: ode(rng, params, z[:PATH_POINTS])
        z = sde.prior_sampling(jax.random.key(0), shape)
        xs = _run_together(samplers, z)
        exact = xs.pop((name, "ode", 0))[0]
        for cfg, (x, nfe) in xs.items():
            path_rms = float(np.sqrt(np.mean(np.sum((x[:PATH_POINTS] - exact) ** 2, -1))))
            out[cfg] = (ENERGY(x), int(nfe), path_rms)
    return out


def test_closed_form_score_matches_float64_reference():
    sde = SDES["vp"]  # exercises both the mean coefficient and the std
    x = 2.0 * jax.random.normal(jax.random.key(0), (16, 2))
    t = jax.random.uniform(jax.random.key(1), (16,), minval=1e-3, maxval=1.0)
    alpha, sigma = (np.asarray(v, np.float64) for v in sde.marginal_prob(jnp.ones((16, 1)), t))
    # p_t = Σ_k w_k N(α μ_k, α² Σ_k + σ² I) in float64.
    covs = alpha[:, :, None, None] ** 2 * np.array(COVS) + (sigma**2)[:, None, None, None] * np.eye(
        2
    )
    diff = np.asarray(x, np.float64)[:, None] - alpha[:, :, None] * np.array(MEANS)
    prec_diff = np.linalg.solve(covs, diff[..., None])[..., 0]
    logits = np.log(WEIGHTS) - 0.5 * np.linalg.slogdet(covs)[1] - 0.5 * np.sum(diff * prec_diff, -1)
    posterior = np.exp(logits - logits.max(1, keepdims=True))
    posterior /= posterior.sum(1, keepdims=True)
    want = -np.sum(posterior[..., None] * prec_diff, 1)
    got = jax.jit(gmm.get_score_fn_2d(sde))(MIX, x, t)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_energy_distance_matches_pairwise_formula():
    # A mixture of near-point masses is the discrete distribution Q = Σ w_k δ_{μ_k}, for which
    # E(P_n, Q) = 2 E|X-Y| - E|X-X'| - E|Y-Y'| is a finite sum of pairwise distances.
    atoms = np.array([[0.0, 0.0], [1.0, 0.5], [-0.5, 1.5]])
    w = np.array([0.5, 0.3, 0.2])
    energy = MixtureEnergyDistance(w, atoms, [1e-10 * np.eye(2)] * 3)
    x = np.random.default_rng(0).normal(size=(50, 2))

    def mean_dist(a, b, wa, wb):
        return float(wa @ np.linalg.norm(a[:, None] - b[None], axis=-1) @ wb)

    u = np.full(50, 1 / 50)
    want = 2 * mean_dist(x, atoms, u, w) - mean_dist(x, x, u, u) - mean_dist(atoms, atoms, w, w)
    np.testing.assert_allclose(energy(x), want, rtol=1e-3)


def test_exact_samples_sit_on_the_floor():
    # 40 independent sets of 2000 exact samples: E[E] = μ₀ holds at every n, and n·E has the
    # spread measured over 1000 sets of 20 000 (0.64 μ₀).
    n, sets = 2000, 40
    x = np.asarray(gmm.sample(jax.random.key(100), MIX, n * sets + N_POINTS)[0])
    energies = np.array([ENERGY(xi) for xi in x[: n * sets].reshape(sets, n, 2)]) / ENERGY.floor(n)
    assert abs(energies.mean() - 1) < 3 * 0.64 / np.sqrt(sets), energies
    assert 0.4 < energies.std(ddof=1) < 1.0, energies
    # Exact samples scaled by 1.02 fail the criterion at N_POINTS.
    assert ENERGY(1.02 * x[n * sets :]) > FLOOR + TOLERANCE


@pytest.mark.parametrize("name", list(SDES))
def test_pc_1000_sits_on_the_floor(name, results):
    energy, nfe, _ = results[name, "pc", 1000]
    assert nfe == 1000
    # The few-step criterion, against the floor instead of another draw.
    assert energy < FLOOR + TOLERANCE, energy / FLOOR


@pytest.mark.parametrize("cfg", ACCEPTED, ids=lambda c: "-".join(map(str, c)))
def test_few_step_sampler_is_as_close_as_pc_1000(cfg, results):
    energy, nfe, _ = results[cfg]
    # Two (Heun, DPM-Solver-2) or three evaluations a step, plus the final denoising step.
    assert nfe == {"heun": 2, "dpm2": 2, "dpm3": 3}[cfg[1]] * cfg[2] + 1 <= MAX_NFE
    pc_energy = results[cfg[0], "pc", 1000][0]
    assert energy <= pc_energy + TOLERANCE, (energy / FLOOR, pc_energy / FLOOR)


@pytest.mark.parametrize("cfg", UNDER_RESOLVED, ids=lambda c: "-".join(map(str, c)))
def test_under_resolved_sampler_fails_the_same_criterion(cfg, results):
    energy = results[cfg][0]
    pc_energy = results[cfg[0], "pc", 1000][0]
    assert energy > pc_energy + TOLERANCE, (energy / FLOOR, pc_energy / FLOOR)


@pytest.mark.parametrize("cfg", ACCEPTED, ids=lambda c: "-".join(map(str, c)))
def test_discretisation_error_against_the_pf_ode(cfg, results):
    # RMS distance to the tight PF-ODE solution from the same prior draw: well inside the
    # narrowest component (std 0.32). EDM's ρ = 7 grid gave 0.027 (VP) and 0.038 (sub-VP) with
    # Heun-24, DPM-Solver-2's 'log_snr' grid 0.029 (sub-VP).
    assert results[cfg][2] < 0.02


@pytest.mark.parametrize("case", ORDER_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_order_of_convergence(case, results):
    name, kind, order, coarse_steps, fine_steps = case
    coarse, fine = results[name, kind, coarse_steps][2], results[name, kind, fine_steps][2]
    observed = np.log(coarse / fine) / np.log(fine_steps / coarse_steps)
    assert observed > order - 0.5, (coarse, fine, observed)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_noise_level_inverses_round_trip(name):
    sde = SDES[name]
    t = jnp.linspace(1e-3, 1.0, 11)
    # float32: σ̂(1e-3) of sub-VP is ~1e-4, so the round trip carries a few 1e-4 relative error.
    np.testing.assert_allclose(
        few_step.time_of_sigma(sde, few_step.noise_to_signal(sde, t)), t, rtol=5e-4
    )
    if name != "ve":
        np.testing.assert_allclose(
            few_step.time_of_log_snr(sde, few_step.log_snr(sde, t)), t, rtol=5e-4
        )


def test_karras_grid_endpoints_and_monotonicity():
    sigmas = few_step.karras_sigmas(80.0, 0.002, 18)
    np.testing.assert_allclose([sigmas[0], sigmas[-1]], [80.0, 0.002], rtol=1e-5)
    assert bool(jnp.all(jnp.diff(sigmas) < 0))


@pytest.mark.parametrize("schedule", few_step.SCHEDULES)
def test_time_grids_run_from_t_to_eps(schedule):
    for sde in SDES.values():
        eps = sde_lib.default_sampling_eps(sde)
        times = few_step.time_grid(sde, 10, None, schedule)
        assert times.shape == (11,)
        np.testing.assert_allclose([times[0], times[-1]], [sde.T, eps], rtol=1e-6)
        assert bool(jnp.all(jnp.diff(times) < 0))


@pytest.fixture(scope="module")
def small_batch():
    """DPM-Solver-2 with and without denoising on 8 per-sample keys, and with keys 1-7 replaced."""
    sde = SDES["subvp"]
    samplers = {
        d: few_step.get_dpm_solver_sampler(sde, gmm.get_score_fn_2d(sde), (8, 2), 3, denoise=d)
        for d in (True, False)
    }

    @jax.jit
    def run(keys):
        return {d: f(keys, MIX) for d, f in samplers.items()}

    keys = jax.random.split(jax.random.key(3), 8)
    other_keys = keys.at[1:].set(jax.random.split(jax.random.key(4), 7))
    return sde, jax.device_get(run(keys)), jax.device_get(run(other_keys))


def test_samples_do_not_depend_on_batch_mates(small_batch):
    _, out, out_other = small_batch
    x, x_other = out[True][0], out_other[True][0]
    # New batch-mates leave sample 0, drawn from the same per-sample key, as it was.
    np.testing.assert_array_equal(x[0], x_other[0])
    assert np.all(np.linalg.norm(x[1:] - x_other[1:], axis=-1) > 1e-3)


def test_denoising_is_tweedies_formula_at_eps(small_batch):
    sde, out, _ = small_batch
    assert (out[True][1], out[False][1]) == (7, 6)
    eps = jnp.full((8,), sde_lib.default_sampling_eps(sde))
    x_eps = jnp.asarray(out[False][0])
    want = sampling.tweedie_denoise(sde, gmm.get_score_fn_2d(sde), MIX, x_eps, eps)
    np.testing.assert_allclose(out[True][0], want, rtol=1e-5, atol=1e-5)


def test_invalid_arguments_raise():
    sde = SDES["ve"]
    score_fn = gmm.get_score_fn_2d(sde)
    with pytest.raises(ValueError, match="VP or sub-VP"):
        few_step.get_dpm_solver_sampler(sde, score_fn, (2, 2), 10)
    with pytest.raises(ValueError, match="order"):
        few_step.get_dpm_solver_sampler(SDES["vp"], score_fn, (2, 2), 10, order=4)
    with pytest.raises(ValueError, match="eps"):
        few_step.get_heun_sampler(sde, score_fn, (2, 2), 10, eps=1.5)
    with pytest.raises(ValueError, match="num_steps"):
        few_step.get_heun_sampler(sde, score_fn, (2, 2), 0)
    with pytest.raises(ValueError, match="schedule"):
        few_step.get_heun_sampler(sde, score_fn, (2, 2), 10, schedule="cosine")
    with pytest.raises(ValueError, match="z has shape"):
        few_step.get_heun_sampler(sde, score_fn, (2, 2), 3)(
            jax.random.key(0), MIX, z=jnp.zeros((3, 2))
        )
