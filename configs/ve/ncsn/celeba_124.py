"""NCSN v1 on CelebA plus techniques 1, 2 and 4 of NCSNv2 (docs/configs.md).

1: initial noise σ_max = 90 (the largest pairwise distance of the training images); 2: N = 500
geometric noise levels; 4: 5 Langevin steps per level with snr 0.128. Inherits the NCSN v1 fix of
`celeba`: model.num_classes, missing in the original (docs/original_code.md, D11), follows
model.num_scales.
"""

from score_sde_jax.configs.ve.ncsn import celeba


def get_config():
    """`ve/ncsn/celeba` with σ_max 90, N = 500, 5 Langevin steps per level, snr 0.128, no EMA."""
    config = celeba.get_config()

    sampling = config.sampling
    sampling.n_steps_each = 5
    sampling.snr = 0.128

    model = config.model
    model.sigma_max = 90.0
    model.num_scales = 500
    return config
