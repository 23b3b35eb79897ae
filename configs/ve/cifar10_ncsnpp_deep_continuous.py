"""NCSN++ (continuous, deep) on CIFAR-10 with the VE SDE: the paper's FID 2.20 model (Table 3)."""

from score_sde_jax.configs import default_cifar10_configs


def get_config():
    """As ``ve/cifar10_ncsnpp_continuous`` with 8 residual blocks per level and 950k steps."""
    config = default_cifar10_configs.get_default_configs()

    training = config.training
    training.sde = "vesde"
    training.continuous = True
    training.n_iters = 950001

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"

    model = config.model
    model.name = "ncsnpp"
    model.fourier_scale = 16
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 8
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "residual"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.embedding_type = "fourier"
    model.conv_size = 3
    return config
