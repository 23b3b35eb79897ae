"""The DDPM U-Net without time input on CIFAR-10, discrete DDPM loss, VP SDE (docs/configs.md)."""

from score_sde_jax.configs import default_cifar10_configs


def get_config():
    """As ``vp/ddpm/cifar10`` but the network does not see the time step."""
    config = default_cifar10_configs.get_default_configs()

    training = config.training
    training.sde = "vpsde"
    training.continuous = False
    training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "ancestral_sampling"
    sampling.corrector = "none"

    data = config.data
    data.centered = True

    model = config.model
    model.name = "ddpm"
    model.scale_by_sigma = False
    model.ema_rate = 0.9999
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = False
    return config
