"""NCSNv2 on CIFAR-10: σ from 50 to 0.01 in N = 232 levels, annealed Langevin (docs/configs.md)."""

from score_sde_jax.configs import default_cifar10_configs


def get_config():
    """VE SDE, discrete SMLD loss, corrector-only sampling (ALD, 5 steps per level, snr 0.176)."""
    config = default_cifar10_configs.get_default_configs()

    training = config.training
    training.sde = "vesde"
    training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 5
    sampling.snr = 0.176

    model = config.model
    model.name = "ncsnv2_64"
    model.scale_by_sigma = True
    model.sigma_max = 50.0
    model.num_scales = 232
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
