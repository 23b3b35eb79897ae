"""NCSN v1 on CelebA plus techniques 1, 2, 4 and 5 of NCSNv2 (docs/configs.md).

Inherits the NCSN v1 fix of `celeba`: model.num_classes, missing in the original
(docs/original_code.md, D11), follows model.num_scales.
"""

from score_sde_jax.configs.ve.ncsn import celeba_124


def get_config():
    """`ve/ncsn/celeba_124` with EMA rate 0.999."""
    config = celeba_124.get_config()
    config.model.ema_rate = 0.999
    return config
