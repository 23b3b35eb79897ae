"""NCSN v1 on CIFAR-10 plus techniques 1, 2 and 4 of NCSNv2 (docs/configs.md).

1: initial noise σ_max = 50 (the largest pairwise distance of the training images); 2: N = 232
geometric noise levels; 4: 5 Langevin steps per level with snr 0.176. Inherits the NCSN v1 fix of
`cifar10`: model.num_classes, missing in the original (docs/original_code.md, D11), follows
model.num_scales.
"""

from score_sde_jax.configs.ve.ncsn import cifar10


def get_config():
    """`ve/ncsn/cifar10` with σ_max 50, N = 232, 5 Langevin steps per level, snr 0.176, no EMA."""
    config = cifar10.get_config()

    sampling = config.sampling
    sampling.n_steps_each = 5
    sampling.snr = 0.176

    model = config.model
    model.sigma_max = 50.0
    model.num_scales = 232
    return config
