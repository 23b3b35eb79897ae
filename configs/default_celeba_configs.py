"""Defaults shared by the CelebA 64 x 64 experiment configs (docs/configs.md).

The original's CelebA defaults differ from the CIFAR-10 ones only in the values set below, so they
start from `default_cifar10_configs` (which also carries the keys this project adds).
"""

import ml_collections

from score_sde_jax.configs import default_cifar10_configs


def get_default_configs() -> ml_collections.ConfigDict:
    """The CelebA defaults (docs/configs.md); no SDE, sampler or network is chosen here."""
    config = default_cifar10_configs.get_default_configs()

    config.sampling.snr = 0.17

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 26
    evaluate.enable_sampling = True

    data = config.data
    data.dataset = "CELEBA"
    # Central 140 x 140 crop resized to 64 (docs/original_code.md#training-evaluation-and-data).
    data.image_size = 64

    # σ_max = largest pairwise distance of CelebA-64 training images in [0, 1] (docs/configs.md).
    config.model.sigma_max = 90.0
    return config
