"""Experiment configs, installed as the package ``score_sde_jax.configs``; each has get_config().

This folder is the repository's ``configs/`` (setup.cfg maps it to ``score_sde_jax.configs``), so
a config loads by path (``--config configs/ve/cifar10_ncsnpp_continuous.py``) and, installed, by
module (``score_sde_jax.configs.ve.cifar10_ncsnpp_continuous``). It holds the paper's 39 configs
at the original's paths, the ``default_*_configs`` they build on, the noise-conditional classifier
(``classifier/``) and the offline configs:

* ``digits.py``: the default of ``python -m score_sde_jax.train`` — a small NCSN++ with the VP SDE
  on scikit-learn's 8×8 handwritten digits, nothing downloaded.
* ``classifier_digits.py``: the default of ``python -m score_sde_jax.train_classifier``.
* ``toy2d.py``: a residual MLP with the VP SDE on a 2-D Gaussian mixture.

See docs/configs.md.
"""

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "digits.py")
