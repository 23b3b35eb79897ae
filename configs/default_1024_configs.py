"""Defaults of the 1024 x 1024 FFHQ and CelebA-HQ NCSN++ configs (docs/configs.md).

The original has no such defaults: its two 1024 px configs were stand-alone PyTorch-port files
that import torch and lack ``training.n_jitted_steps``, ``eval.enable_*`` and
``eval.bpd_dataset`` (docs/original_code.md, D14). Here they share these defaults, built from the
LSUN ones; the values the two original files set are kept, and the keys they lacked get the values
below.
"""

import ml_collections
from ml_collections import config_dict

from score_sde_jax.configs import default_lsun_configs


def get_default_configs() -> ml_collections.ConfigDict:
    """FFHQ-1024 defaults; CelebA-HQ-1024 only changes ``data.dataset`` and the records."""
    config = default_lsun_configs.get_default_configs()

    training = config.training
    training.batch_size = 8
    # Missing in the original; 1, the original README's choice when memory is short.
    training.n_jitted_steps = 1

    config.sampling.snr = 0.15

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 96
    evaluate.batch_size = 1024
    # eval.enable_sampling / enable_loss / enable_bpd / bpd_dataset were missing in the original;
    # the LSUN defaults (True / True / False / 'test') are kept.

    data = config.data
    data.dataset = "FFHQ"
    data.image_size = 1024
    # The original pointed at the author's local file. Set one of them: the StyleGAN
    # multi-resolution .tfrecords of this resolution (e.g. ffhq-r10.tfrecords), or a folder of
    # images (see `score_sde_jax.data.datasets`).
    data.tfrecords_path = config_dict.placeholder(str)
    data.path = config_dict.placeholder(str)

    # Largest pairwise distance of the 1024 px images (docs/configs.md).
    config.model.sigma_max = 1348.0
    return config
