"""NCSNv2 on CelebA 64 x 64: σ from 90 to 0.01 in N = 500 levels, annealed Langevin.

See docs/configs.md.
"""

from score_sde_jax.configs import default_celeba_configs


def get_config():
    """VE SDE, discrete SMLD loss, corrector-only sampling (ALD, 5 steps per level, snr 0.128)."""
    config = default_celeba_configs.get_default_configs()

    training = config.training
    training.sde = "vesde"
    training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 5
    sampling.snr = 0.128

    model = config.model
    model.name = "ncsnv2_64"
    model.scale_by_sigma = True
    model.sigma_max = 90.0
    model.num_scales = 500
    model.ema_rate = 0.999
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.lr = 1e-4
    optim.warmup = 0
    optim.grad_clip = -1.0  # no clipping
    return config
