"""Defaults shared by the 256 x 256 LSUN / FFHQ / CelebA-HQ experiment configs (docs/configs.md).

The original's LSUN defaults differ from the CIFAR-10 ones only in the values set below, so they
start from `default_cifar10_configs` (which also carries the keys this project adds). The LSUN
scene is chosen by each experiment with ``data.category`` ('bedroom', 'church_outdoor').
"""

import ml_collections

from score_sde_jax.configs import default_cifar10_configs


def get_default_configs() -> ml_collections.ConfigDict:
    """The LSUN defaults (docs/configs.md); no SDE, sampler, network or category is chosen here."""
    config = default_cifar10_configs.get_default_configs()

    training = config.training
    training.batch_size = 64
    training.n_iters = 2400001
    training.snapshot_freq_for_preemption = 5000

    config.sampling.snr = 0.075

    evaluate = config.eval
    evaluate.begin_ckpt = 50
    evaluate.end_ckpt = 96
    evaluate.batch_size = 512
    evaluate.enable_sampling = True

    data = config.data
    data.dataset = "LSUN"
    data.image_size = 256

    model = config.model
    model.sigma_max = 378.0  # largest pairwise distance of LSUN-256 images (docs/configs.md)
    model.num_scales = 2000
    model.dropout = 0.0
    return config
