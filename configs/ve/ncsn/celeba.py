"""NCSN v1 on CelebA 64 x 64: σ from 1 to 0.01 in N = 10 levels, annealed Langevin.

See docs/configs.md. Fixed here: the original sets ``training.loss = 'vesde'`` instead of
``training.sde`` (docs/original_code.md, D12), so no SDE was configured; this file sets
training.sde = 'vesde'. As in every NCSN v1 config, model.num_classes (never set in the original,
docs/original_code.md, D11) is tied to model.num_scales.
"""

from score_sde_jax.configs import default_celeba_configs


def get_config():
    """VE SDE, discrete SMLD loss, corrector-only sampling (ALD, 100 steps per level), no EMA."""
    config = default_celeba_configs.get_default_configs()

    training = config.training
    training.sde = "vesde"
    training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 100
    sampling.snr = 0.316

    model = config.model
    model.name = "ncsn"
    model.scale_by_sigma = False
    model.sigma_max = 1.0
    model.num_scales = 10
    model.num_classes = model.get_ref("num_scales")
    model.ema_rate = 0.0
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.lr = 1e-3
    optim.warmup = 0
    optim.grad_clip = -1.0  # no clipping
    return config
