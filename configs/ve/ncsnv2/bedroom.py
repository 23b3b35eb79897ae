"""NCSNv2 on LSUN bedroom 128 x 128: σ from 190 to 0.01 in N = 1086 levels (docs/configs.md).

Fixed here (docs/original_code.md, D13): the original sets ``training.continuouse = False`` (typo),
so training.continuous kept the default True and the continuous loss fed float σ labels to NCSNv2,
which indexes its σ table with integer labels and fails. This file sets training.continuous = False,
the discrete SMLD training the config was written for.
"""

from score_sde_jax.configs import default_lsun_configs


def get_config():
    """VE SDE, discrete SMLD loss, corrector-only sampling (ALD, 3 steps per level, snr 0.095)."""
    config = default_lsun_configs.get_default_configs()

    training = config.training
    training.batch_size = 128
    training.sde = "vesde"
    training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 3
    sampling.snr = 0.095

    data = config.data
    data.category = "bedroom"
    data.image_size = 128  # short side resized to 128, then a central crop
    # (docs/original_code.md#training-evaluation-and-data)

    model = config.model
    model.name = "ncsnv2_128"
    model.scale_by_sigma = True
    model.sigma_max = 190.0
    model.num_scales = 1086
    model.ema_rate = 0.9999
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.lr = 1e-4
    optim.warmup = 0
    optim.grad_clip = -1.0  # no clipping
    return config
