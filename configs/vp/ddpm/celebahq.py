"""DDPM (Ho et al.) on CelebA-HQ 256 x 256, VP SDE (docs/configs.md)."""

from ml_collections import config_dict

from score_sde_jax.configs import default_lsun_configs


def get_config():
    """VP SDE, discrete DDPM objective, ancestral sampling; the 6-level 256 px DDPM U-Net."""
    config = default_lsun_configs.get_default_configs()

    training = config.training
    training.sde = "vpsde"
    training.continuous = False
    training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "ancestral_sampling"
    sampling.corrector = "none"

    data = config.data
    data.dataset = "CelebAHQ"
    data.image_size = 256
    # The original pointed at the author's local file. Set one of them: the PGGAN
    # multi-resolution .tfrecords of 256 px (e.g. celebahq-r08.tfrecords) or a folder of
    # images; with neither, the tfds dataset celeb_a_hq/256 is read.
    data.tfrecords_path = config_dict.placeholder(str)
    data.path = config_dict.placeholder(str)
    data.centered = True

    model = config.model
    model.name = "ddpm"
    model.scale_by_sigma = False
    model.num_scales = 1000
    model.ema_rate = 0.9999
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 1, 2, 2, 4, 4)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True

    config.optim.lr = 2e-5
    return config
