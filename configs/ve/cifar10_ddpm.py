"""The DDPM U-Net trained with the discrete SMLD objective on CIFAR-10, VE SDE (docs/configs.md)."""

from score_sde_jax.configs import default_cifar10_configs


def get_config():
    """VE SDE with N = 1000 discrete levels; the DDPM network divides its output by σ."""
    config = default_cifar10_configs.get_default_configs()

    training = config.training
    training.sde = "vesde"
    training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"

    model = config.model
    model.name = "ddpm"
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    return config
