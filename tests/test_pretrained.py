"""The embedded pretrained models (docs/pretrained.md): their samples are recognised as digits as
confidently as real held-out digits, the colour model's are coloured, the classifier is accurate."""

import importlib.resources

import jax
import numpy as np
import pytest
from digits_judge import held_out, scores

from score_sde_jax import checkpoints
from score_sde_jax.data import digits
from score_sde_jax.sampling import generation, registry
from score_sde_jax.training import classifier as classifier_lib

# Samples must score within this fraction of the held-out real digits (issue 15, docs/pretrained.md).
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def real_scores():
    return scores(held_out()[0])


def _samples(name: str, num: int) -> np.ndarray:
    model = checkpoints.load_pretrained(name)
    generator = generation.Generator(model.config, registry.SamplerSpec(), num)
    samples, _ = generation.generate(generator, model.params, seed=0, num_samples=num)
    return samples


@pytest.mark.parametrize("name", ["digits", "color_digits"])
def test_samples_score_like_real_digits(name, real_scores):
    samples = _samples(name, digits.NUM_EVAL)
    assert samples.dtype == np.uint8 and samples.shape[:3] == (digits.NUM_EVAL, 8, 8)
    found = scores(samples)
    assert found["is"] >= (1 - TOLERANCE) * real_scores["is"], (found, real_scores)
    assert found["confidence"] >= (1 - TOLERANCE) * real_scores["confidence"], found
    # Every digit appears (180 samples: 18 each on average).
    assert found["counts"].min() >= 5, found["counts"]
    if name == "color_digits":
        # Coloured strokes: on bright pixels the channels differ (a gray image has spread 0).
        rgb = samples.astype(np.float64) / 255.0
        bright = rgb.max(axis=-1) > 0.5
        spread = (rgb.max(axis=-1) - rgb.min(axis=-1))[bright]
        assert spread.mean() > 0.25, spread.mean()


def test_classifier_recognises_held_out_digits_at_small_noise():
    model = checkpoints.load_pretrained("digits_classifier")
    logits_fn = classifier_lib.get_logit_fn(
        model.config, classifier_lib.create_classifier(model.config)
    )
    images, labels = held_out()
    x = images.astype(np.float32) / 255.0
    accuracy = {}
    for sigma in (0.01, 0.1):
        noisy = x + sigma * jax.random.normal(jax.random.key(0), x.shape)
        logits = jax.jit(logits_fn)(model.params, noisy, np.full(len(x), sigma, np.float32))
        accuracy[sigma] = float((np.argmax(logits, axis=-1) == labels).mean())
    assert accuracy[0.01] >= 0.95 and accuracy[0.1] >= 0.9, accuracy


def test_stored_as_float16_and_loaded_as_float32(tmp_path):
    model = checkpoints.load_pretrained("digits")
    leaves = jax.tree.leaves(model.params)
    assert all(leaf.dtype == np.float32 for leaf in leaves)
    assert sum(leaf.size for leaf in leaves) > 1_000_000
    assert model.info["step"] > 0 and model.info["made_by"]
    assert model.config.data.dataset == "DIGITS" and isinstance(model.config.model.nf, int)
    # A round trip through save_pretrained keeps the float16 values exactly.
    checkpoints.save_pretrained(tmp_path, "copy", model.config, model.params, model.info)
    copy = (tmp_path / "copy.msgpack").read_bytes()
    original = importlib.resources.files("score_sde_jax.pretrained").joinpath("digits.msgpack")
    assert copy == original.read_bytes()


def test_unknown_name_lists_the_models():
    with pytest.raises(FileNotFoundError, match="digits_classifier"):
        checkpoints.load_pretrained("cifar10")
    assert checkpoints.pretrained_names() == ["color_digits", "digits", "digits_classifier"]
