"""Defaults shared by the CelebA 64 x 64 experiment configs (facts §7.1).

The original's CelebA defaults differ from the CIFAR-10 ones only in the values set below, so they
start from `default_cifar10_configs` (which also carries the keys this project adds).
"""

import ml_collections

from configs import default_cifar10_configs


def get_default_configs() -> ml_collections.ConfigDict:
    """The CelebA defaults (facts §7.1); no SDE, sampler or network is chosen here."""
    config = default_cifar10_configs.get_default_configs()

    config.sampling.snr = 0.17

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 26
    evaluate.enable_sampling = True

    data = config.data
    data.dataset = "CELEBA"
    data.image_size = 64  # central 140 x 140 crop resized to 64 (facts §8.4)

    # σ_max = largest pairwise distance of CelebA-64 training images in [0, 1] (facts §7.4).
    config.model.sigma_max = 90.0
    return config
