"""Configs that ship inside the package, so the CLI finds them without a repository checkout.

* ``digits.py``: the offline default of ``python -m score_sde_jax.train`` — a small NCSN++ with
  the VP SDE on scikit-learn's 8×8 handwritten digits.
* ``toy2d.py``: a residual MLP with the VP SDE on a 2-D Gaussian mixture.

The paper's experiment configs live in ``configs/`` at the repository root (like the original).
"""

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "digits.py")
