"""NCSN++ (continuous) on LSUN church_outdoor 256 x 256 with the VE SDE (docs/configs.md)."""

from score_sde_jax.configs import default_lsun_configs


def get_config():
    """VE SDE (σ_max 380, N = 2000), 256 px NCSN++ with output/input-skip pyramids."""
    config = default_lsun_configs.get_default_configs()

    training = config.training
    training.sde = "vesde"
    training.continuous = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"

    data = config.data
    data.category = "church_outdoor"
    data.centered = False

    model = config.model
    model.sigma_max = 380.0
    model.name = "ncsnpp"
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "output_skip"
    model.progressive_input = "input_skip"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.fourier_scale = 16
    model.conv_size = 3
    return config
