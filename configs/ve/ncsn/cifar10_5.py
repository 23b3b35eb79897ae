"""NCSN v1 on CIFAR-10 plus technique 5 of NCSNv2: an EMA of the weights (docs/configs.md).

Inherits the NCSN v1 fix of `cifar10`: model.num_classes, missing in the original
(docs/original_code.md, D11), is tied to model.num_scales.
"""

from score_sde_jax.configs.ve.ncsn import cifar10


def get_config():
    """`ve/ncsn/cifar10` with EMA rate 0.999."""
    config = cifar10.get_config()
    config.model.ema_rate = 0.999
    return config
