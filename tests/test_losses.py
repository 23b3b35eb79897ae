"""Losses (Eq. (7); docs/original_code.md#losses-optimizer-and-ema) against closed forms: the DSM minimum on Gaussian data, hand-computable toy
networks for the SMLD and DDPM losses, and a tiny MLP trained to the exact score's loss."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from score_sde_jax import gmm, losses, score_fns, sde_lib
from score_sde_jax.models import get_model

SDES = {
    "ve": sde_lib.VESDE(0.01, 10.0, 1000),
    "vp": sde_lib.VPSDE(0.1, 20.0, 1000),
    "subvp": sde_lib.subVPSDE(0.1, 20.0, 1000),
}
EPS = 1e-5

# A correlated 3-D Gaussian: the data distribution whose DSM minimum is known in closed form.
MU = np.array([0.5, -1.0, 0.25])
SIGMA = np.array([[0.6, 0.2, 0.0], [0.2, 0.4, -0.1], [0.0, -0.1, 0.3]])


def _kernel_np(name, t):
    """Mean coefficient m(t) and std s(t) of p_0t, written out independently of sde_lib (float64)."""
    if name == "ve":
        return np.ones_like(t), 0.01 * (10.0 / 0.01) ** t
    log_m = -0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1
    m = np.exp(log_m)
    if name == "vp":
        return m, np.sqrt(1.0 - m**2)
    return m, 1.0 - m**2


def _time_average(f):
    """E_{t ~ U(EPS, 1)} f(t) by 200-node Gauss–Legendre quadrature."""
    nodes, weights = np.polynomial.legendre.leggauss(200)
    t = 0.5 * (1.0 - EPS) * nodes + 0.5 * (1.0 + EPS)
    return 0.5 * np.sum(weights * f(t))


def _zero_data_score(sde, offset=0.0):
    """Exact score of p_t when the data are the point 0 (p_t = N(0, s(t)² I)), plus ``offset``."""

    def score_fn(params, x, t, rng=None):
        std = sde.marginal_prob(x, t)[1]
        return sde_lib.batch_mul(-1.0 / std**2, x) + offset

    return score_fn


@pytest.mark.parametrize("name", sorted(SDES))
def test_dsm_loss_of_exact_score_is_closed_form_minimum(name):
    # For x₀ ~ N(μ, Σ) and the exact score s = -C_t⁻¹(x - m μ), C_t = m²Σ + s²I, the identity
    # σ s + z = (I - s²C⁻¹) z - s m C⁻¹ (x₀ - μ) gives E‖σ_t s + z‖² = d - σ_t² tr(C_t⁻¹).
    # A constant error δ in the score adds E_t[σ_t²] ‖δ‖² (the cross term has mean zero).
    sde = SDES[name]
    d = MU.size
    lam = np.linalg.eigvalsh(SIGMA)

    def excess(t):
        m, s = _kernel_np(name, t)
        return d - s**2 * np.sum(1.0 / (m[:, None] ** 2 * lam + s[:, None] ** 2), axis=1)

    expected = _time_average(excess) / d
    delta = jnp.array([0.3, -0.2, 0.1])
    expected_increase = _time_average(lambda t: _kernel_np(name, t)[1] ** 2) * 0.14 / d

    params = gmm.mixture([1.0], [MU], [SIGMA])
    exact = gmm.get_score_fn(sde)
    loss_exact = losses.get_sde_loss_fn(sde, exact, per_example=True)
    loss_perturbed = losses.get_sde_loss_fn(
        sde, lambda p, x, t, rng=None: exact(p, x, t) + delta, per_example=True
    )
    batch, _ = gmm.sample(jax.random.PRNGKey(0), params, 1 << 15)

    @jax.jit
    def both(rng):
        return loss_exact(params, rng, batch), loss_perturbed(params, rng, batch)

    exact_losses, perturbed_losses = map(np.asarray, both(jax.random.PRNGKey(1)))
    n = exact_losses.size
    se = exact_losses.std() / math.sqrt(n)
    assert abs(exact_losses.mean() - expected) < 4 * se
    increase = perturbed_losses - exact_losses
    assert increase.mean() > 0
    assert abs(increase.mean() - expected_increase) < 4 * increase.std() / math.sqrt(n)


@pytest.mark.parametrize("name", sorted(SDES))
def test_dsm_loss_hand_computed_on_point_data(name):
    # Data at 0: -x̃/s(t)² is the exact score, so σ s + z = 0; adding a constant c makes every
    # per-example loss exactly s(t)² c² (mean over dims), which also reveals the sampled t.
    sde = SDES[name]
    batch = jnp.zeros((4096, 2))
    zero = losses.get_sde_loss_fn(sde, _zero_data_score(sde), per_example=True)
    per_ex = losses.get_sde_loss_fn(sde, _zero_data_score(sde, 1.0), per_example=True)
    rng = jax.random.PRNGKey(3)
    np.testing.assert_allclose(zero(None, rng, batch), 0.0, atol=1e-5)

    std = np.sqrt(np.asarray(per_ex(None, rng, batch), np.float64))
    # Invert s(t) on a fine grid: t must be U(eps, 1).
    grid = np.linspace(EPS, 1.0, 200001)
    t = np.interp(std, _kernel_np(name, grid)[1], grid)
    assert t.min() >= EPS - 1e-4 and t.max() <= 1.0 + 1e-4
    # Kolmogorov–Smirnov distance to U(eps, 1): 1.63/sqrt(n) is the 1 % critical value.
    ecdf = np.arange(1, t.size + 1) / t.size
    assert np.max(np.abs(ecdf - (np.sort(t) - EPS) / (1.0 - EPS))) < 1.63 / math.sqrt(t.size)


def test_reduce_sum_is_half_d_times_mean_and_likelihood_weighting():
    sde = SDES["vp"]
    batch = jax.random.normal(jax.random.PRNGKey(0), (64, 3, 2, 2))  # image-shaped: D = 12
    score = _zero_data_score(sde, 0.5)
    rng = jax.random.PRNGKey(1)
    mean_loss = losses.get_sde_loss_fn(sde, score, reduce_mean=True, per_example=True)
    sum_loss = losses.get_sde_loss_fn(sde, score, reduce_mean=False, per_example=True)
    np.testing.assert_allclose(sum_loss(None, rng, batch), 6.0 * mean_loss(None, rng, batch), 1e-5)
    np.testing.assert_allclose(
        losses.get_sde_loss_fn(sde, score)(None, rng, batch), mean_loss(None, rng, batch).mean()
    )

    # Likelihood weighting: g² ‖s + z/σ‖² = (g²/σ²) ‖σ s + z‖², same draws of t and z.
    weighted = losses.get_sde_loss_fn(sde, score, likelihood_weighting=True, per_example=True)
    t = jax.random.uniform(jax.random.split(rng, 3)[0], (64,), minval=EPS, maxval=1.0)
    g2 = sde.beta(t)
    std = sde.marginal_prob(batch, t)[1]
    np.testing.assert_allclose(
        weighted(None, rng, batch), g2 / std**2 * mean_loss(None, rng, batch), rtol=1e-4
    )


def test_train_flag_passes_dropout_key():
    sde = SDES["ve"]
    seen = []

    def score_fn(params, x, t, rng=None):
        seen.append(rng is not None)
        return jnp.zeros_like(x)

    batch = jnp.ones((2, 2))
    losses.get_sde_loss_fn(sde, score_fn)(None, jax.random.PRNGKey(0), batch)
    losses.get_sde_loss_fn(sde, score_fn, train=False)(None, jax.random.PRNGKey(0), batch)
    assert seen == [True, False]


def _descending_sigmas(vesde):
    return np.exp(np.linspace(np.log(vesde.sigma_max), np.log(vesde.sigma_min), vesde.N))


def test_smld_loss_hand_computed():
    vesde = sde_lib.VESDE(0.01, 10.0, 10)
    sigmas = jnp.asarray(_descending_sigmas(vesde), jnp.float32)
    d = 3

    # Data at 0: -x̃/σ_l² is the exact score, so the raw output -x̃/σ_l² + c_l/σ_l has per-example
    # loss σ_l² · ½ Σ_d (c_l/σ_l)² = ½ d c_l². With c_l = sqrt(l + 1) the loss reveals the label,
    # and any other σ convention (e.g. ascending) would leave non-integer values.
    def model_fn(params, x, labels, rng):
        sigma = sigmas[labels][:, None]
        return -x / sigma**2 + jnp.sqrt(labels + 1.0)[:, None] / sigma

    loss_fn = losses.get_smld_loss_fn(vesde, model_fn, per_example=True)
    per_ex = np.asarray(loss_fn(None, jax.random.PRNGKey(0), jnp.zeros((5000, d))))
    labels = per_ex / (0.5 * d) - 1.0
    assert np.all(np.isfinite(labels))
    np.testing.assert_allclose(labels, np.round(labels), atol=1e-3)
    counts = np.bincount(np.round(labels).astype(int), minlength=10)
    assert counts.size == 10 and np.all(np.abs(counts - 500) < 4 * math.sqrt(500 * 0.9))

    # Non-zero data and a linear network a·x̃, through the documented key contract
    # (label key, noise key, dropout key = split(rng, 3)): loss = σ² · ½ Σ (a x̃ + z/σ)².
    batch = jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    rng = jax.random.PRNGKey(7)
    label_rng, noise_rng, _ = jax.random.split(rng, 3)
    lab = np.asarray(jax.random.randint(label_rng, (2,), 0, 10))
    z = np.asarray(jax.random.normal(noise_rng, batch.shape), np.float64)
    sigma = _descending_sigmas(vesde)[lab][:, None]
    x_tilde = np.asarray(batch) + sigma * z
    hand = sigma[:, 0] ** 2 * 0.5 * np.sum((0.3 * x_tilde + z / sigma) ** 2, axis=1)
    linear = losses.get_smld_loss_fn(vesde, lambda p, x, labels, rng: 0.3 * x)
    np.testing.assert_allclose(linear(None, rng, batch), hand.mean(), rtol=1e-4)


def test_ddpm_loss_hand_computed():
    vpsde = sde_lib.VPSDE(0.1, 5.0, 10)  # β_i up to 0.5, so every ᾱ_i is a valid variance
    alphas_cumprod = np.cumprod(1.0 - np.linspace(0.1 / 10, 5.0 / 10, 10))
    sqrt_1m = jnp.asarray(np.sqrt(1.0 - alphas_cumprod), jnp.float32)

    # Data at 0: x̃ / sqrt(1 - ᾱ_l) recovers z exactly; adding c_l = sqrt(l + 1) gives per-example
    # loss c_l² = l + 1 (mean over dims) — the ᾱ of the drawn label is used consistently.
    def model_fn(params, x, labels, rng):
        return x / sqrt_1m[labels][:, None] + jnp.sqrt(labels + 1.0)[:, None]

    loss_fn = losses.get_ddpm_loss_fn(vpsde, model_fn, per_example=True)
    labels = np.asarray(loss_fn(None, jax.random.PRNGKey(0), jnp.zeros((5000, 2)))) - 1.0
    assert np.all(np.isfinite(labels))
    np.testing.assert_allclose(labels, np.round(labels), atol=1e-3)
    counts = np.bincount(np.round(labels).astype(int), minlength=10)
    assert counts.size == 10 and np.all(np.abs(counts - 500) < 4 * math.sqrt(500 * 0.9))

    # reduce_mean=False: 0.5 × sum over the 2 dims = the same value here.
    summed = losses.get_ddpm_loss_fn(vpsde, model_fn, reduce_mean=False, per_example=True)
    np.testing.assert_allclose(
        summed(None, jax.random.PRNGKey(0), jnp.zeros((5000, 2))), labels + 1.0, rtol=1e-4
    )


def test_loss_dispatcher():
    def model_fn(params, x, labels, rng):
        return 0.1 * x + labels.astype(jnp.float32)[:, None] * 1e-3

    batch = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
    rng = jax.random.PRNGKey(1)
    ve, vp, subvp = SDES["ve"], SDES["vp"], SDES["subvp"]
    pairs = [
        (
            losses.get_loss_fn(ve, model_fn, False, False, False),
            losses.get_smld_loss_fn(ve, model_fn, reduce_mean=False),
        ),
        (
            losses.get_loss_fn(vp, model_fn, False, True, False),
            losses.get_ddpm_loss_fn(vp, model_fn, reduce_mean=True),
        ),
        (
            losses.get_loss_fn(subvp, model_fn, True, True, True),
            losses.get_sde_loss_fn(
                subvp,
                score_fns.get_score_fn(subvp, model_fn, continuous=True),
                reduce_mean=True,
                likelihood_weighting=True,
            ),
        ),
    ]
    for dispatched, direct in pairs:
        np.testing.assert_allclose(dispatched(None, rng, batch), direct(None, rng, batch))

    with pytest.raises(ValueError, match="sub"):
        losses.get_loss_fn(subvp, model_fn, False, True, False)
    with pytest.raises(ValueError, match="continuous"):
        losses.get_loss_fn(vp, model_fn, False, True, True)
    with pytest.raises(ValueError, match="VESDE"):
        losses.get_smld_loss_fn(vp, model_fn)
    with pytest.raises(ValueError, match="VPSDE"):
        losses.get_ddpm_loss_fn(subvp, model_fn)
    for eps in (0.0, -1e-3, 1.0, 2.0):
        with pytest.raises(ValueError, match="eps"):
            losses.get_sde_loss_fn(vp, _zero_data_score(vp), eps=eps)


def _mlp_config(**overrides):
    model = dict(name="mlp", nf=64, num_layers=2, embedding_type="positional")
    model.update(overrides)
    return ml_collections.ConfigDict({"model": model})


def _model_fn(model):
    def model_fn(params, x, labels, rng):
        if rng is None:
            return model.apply({"params": params}, x, labels, train=False)
        return model.apply({"params": params}, x, labels, train=True, rngs={"dropout": rng})

    return model_fn


def test_mlp_shapes_scaling_and_config_errors():
    model = get_model(
        _mlp_config(
            nf=16, scale_by_sigma=True, sigma_min=0.01, sigma_max=10.0, num_scales=10, dropout=0.1
        )
    )
    unscaled_model = get_model(_mlp_config(nf=16, dropout=0.1))
    images = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
    int_labels, float_labels = np.array([0, 9]), np.array([10.0, 0.01], np.float32)

    @jax.jit
    def init(rng):
        params = model.init(rng, images, int_labels)["params"]
        # Non-zero output weights so that the σ scaling is visible.
        return jax.tree.map(lambda p: p + 0.1, params)

    params = init(jax.random.PRNGKey(1))

    @jax.jit
    def outputs(params, dropout_rng):
        variables = {"params": params}
        return (
            model.apply(variables, images, int_labels),
            model.apply(variables, images, float_labels),
            unscaled_model.apply(variables, images, int_labels),
            unscaled_model.apply(variables, images, float_labels),
            model.apply(variables, images, int_labels, train=True, rngs={"dropout": dropout_rng}),
        )

    out_int, out_float, unscaled_int, unscaled_float, train_out = outputs(
        params, jax.random.PRNGKey(2)
    )
    assert out_int.shape == images.shape
    # Integer labels index descending σ (0 ↔ σ_max = 10, 9 ↔ σ_min); float labels are σ itself.
    sigma = np.array([10.0, 0.01])[:, None, None, None]
    np.testing.assert_allclose(out_int * sigma, unscaled_int, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out_float * sigma, unscaled_float, rtol=1e-4, atol=1e-6)
    assert not np.allclose(train_out, out_int)  # dropout is active in train mode

    # Fourier features of log σ (the VE-continuous setting) on 2-D points.
    fourier = get_model(_mlp_config(nf=16, embedding_type="fourier", scale_by_sigma=True))
    points, sigmas = np.ones((3, 2), np.float32), np.array([0.01, 1.0, 50.0], np.float32)

    @jax.jit
    def fourier_out(rng):
        variables = fourier.init(rng, points, sigmas)
        return variables["params"], fourier.apply(variables, points, sigmas)

    fourier_params, out = fourier_out(jax.random.PRNGKey(0))
    assert fourier_params["GaussianFourierProjection_0"]["W"].shape == (16,)
    assert out.shape == points.shape and np.all(np.isfinite(out))

    with pytest.raises(ValueError, match="positional"):
        get_model(_mlp_config(embedding_type="sinusoid"))
    with pytest.raises(ValueError, match="swish"):
        get_model(_mlp_config(nonlinearity="tanh"))


def test_mlp_trained_on_mixture_reaches_exact_score_loss():
    # Issue 2 acceptance: a tiny MLP trained with the continuous loss on a 2-D mixture for a few
    # hundred steps gets within a few percent of the loss of the exact score. Both losses are
    # evaluated on the same data and the same (t, z) draws, so the comparison has little noise.
    sde = SDES["vp"]
    mixture = gmm.mixture(
        [0.3, 0.7],
        [[-1.4, 0.7], [0.6, -0.3]],
        [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]]],
    )
    model = get_model(_mlp_config())
    score_fn = score_fns.get_score_fn(sde, _model_fn(model), continuous=True)
    loss_fn = losses.get_sde_loss_fn(sde, score_fn)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)))["params"]
    steps, batch_size = 400, 1024
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps, alpha=0.05))

    @jax.jit
    def train(params, rng):
        def step(carry, rng):
            params, opt_state = carry
            data_rng, loss_rng = jax.random.split(rng)
            batch, _ = gmm.sample(data_rng, mixture, batch_size)
            grads = jax.grad(loss_fn)(params, loss_rng, batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(rng, steps))
        return params

    trained = train(params, jax.random.PRNGKey(1))

    eval_batch, _ = gmm.sample(jax.random.PRNGKey(5), mixture, 8192)
    eval_rng = jax.random.PRNGKey(7)
    eval_loss = jax.jit(losses.get_sde_loss_fn(sde, score_fn, train=False))
    exact_loss = losses.get_sde_loss_fn(sde, gmm.get_score_fn(sde), train=False)(
        mixture, eval_rng, eval_batch
    )
    initial = eval_loss(params, eval_rng, eval_batch)
    final = eval_loss(trained, eval_rng, eval_batch)
    assert initial > 3.0 * exact_loss  # the untrained network is far off ...
    assert 0.99 * exact_loss < final < 1.05 * exact_loss  # ... the trained one within 5 %
