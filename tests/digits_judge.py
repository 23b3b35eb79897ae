"""A judge of 8 x 8 digit images: a small scikit-learn MLP trained on the real training digits.

`judge()` fits it once per process (a second on a CPU; fixed seed) on the first 1,617 digits and
reports its accuracy on the 180 held-out ones; `scores(images)` gives an Inception-score-style
figure on its class probabilities (exp of the mean KL divergence between p(y | x) and p(y)), its
mean confidence (mean max p(y | x)) and the spread of predicted labels. The tests compare samples
against the held-out real digits scored the same way (docs/pretrained.md#how-good).
"""

import functools

import numpy as np
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from score_sde_jax.data import digits

NUM_EVAL = digits.NUM_EVAL


def _features(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 8, 8, C] -> [N, 64] in [0, 1]. A coloured digit is judged by its brightest
    channel, which holds the gray digit's stroke intensity (`data.digits.colors`)."""
    images = np.asarray(images, np.float64) / 255.0
    if images.ndim == 4:
        images = images.max(axis=-1)
    return images.reshape(len(images), -1)


@functools.cache
def judge() -> MLPClassifier:
    """The MLP, fitted on the training digits (held-out accuracy 95 %)."""
    images, labels = digits.digits_uint8()
    model = MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=2000, random_state=0)
    with threadpool_limits(1):  # 2 s; a minute with BLAS threads fighting over a busy CPU
        return model.fit(_features(images[:-NUM_EVAL]), labels[:-NUM_EVAL])


def held_out() -> tuple[np.ndarray, np.ndarray]:
    """The 180 held-out real digits (uint8 [180, 8, 8, 1]) and their labels."""
    images, labels = digits.digits_uint8()
    return images[-NUM_EVAL:], labels[-NUM_EVAL:]


def probabilities(images: np.ndarray) -> np.ndarray:
    """p(y | x) [N, 10] of uint8 digit images [N, 8, 8, C]."""
    return judge().predict_proba(_features(images))


def scores(images: np.ndarray) -> dict:
    """``{'is', 'confidence', 'counts'}`` of uint8 digit images [N, 8, 8, C] (module docstring)."""
    p = probabilities(images)
    marginal = p.mean(axis=0)
    kl = np.sum(p * (np.log(p + 1e-12) - np.log(marginal + 1e-12)), axis=1)
    return {
        "is": float(np.exp(kl.mean())),
        "confidence": float(p.max(axis=1).mean()),
        "counts": np.bincount(p.argmax(axis=1), minlength=10),
    }
