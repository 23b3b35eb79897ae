"""The README's pictures, made from the embedded pretrained models: the command.

    python -m score_sde_jax.tools.make_figures --out docs/images [--num_steps N] [--seed S]

writes, in one to three minutes on a laptop CPU and with nothing downloaded,

* ``digits_samples.png``, ``color_digits_samples.png``: predictor–corrector samples (Algorithm 1)
  of the ``digits`` and ``color_digits`` models;
* ``inpainting.png``: held-out digits, the same with the middle quarter of their rows hidden,
  and the digits completed by `controllable.get_pc_inpainter` (App. I.2);
* ``colorization.png``: held-out colour digits, their gray levels, and the colours drawn by
  `controllable.get_pc_colorizer` (App. I.3).
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from absl import app, flags, logging

from score_sde_jax import checkpoints, score_fns
from score_sde_jax.data import datasets, image_io, pipeline
from score_sde_jax.models import get_model, get_model_fn
from score_sde_jax.sampling import controllable, registry

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "docs/images", "Folder to write the PNGs to.")
flags.DEFINE_integer("num_steps", None, "Noise levels N of the samplers (default: the config's).")
flags.DEFINE_integer("seed", 0, "Random seed.")

SCALE = 6  # pixels per pixel of the 8x8 digits


class Model:
    """An embedded score model with what its samplers need."""

    def __init__(self, name: str, num_steps: int | None):
        pretrained = checkpoints.load_pretrained(name)
        self.config, self.params = pretrained.config, pretrained.params
        self.spec = registry.SamplerSpec("pc", num_steps=num_steps)
        self.model_fn = get_model_fn(get_model(self.config))
        self.sde = registry.get_sde(self.config, self.spec)
        continuous = self.config.training.continuous
        self.score_fn = score_fns.get_score_fn(self.sde, self.model_fn, continuous)
        s = self.config.sampling
        self.pc = dict(
            predictor=s.predictor, corrector=s.corrector, snr=s.snr, n_steps=s.n_steps_each
        )
        self.scaler = pipeline.get_data_scaler(self.config)
        self.inverse_scaler = pipeline.get_data_inverse_scaler(self.config)

    def samples(self, rng, count: int):
        """``count`` unconditional samples, uint8."""
        c = self.config.data
        shape = (count, c.image_size, c.image_size, c.num_channels)
        x, _ = registry.get_sampler(self.config, self.model_fn, shape, self.spec)(rng, self.params)
        return self.to_uint8(x)

    def test_images(self, count: int):
        """The first ``count`` held-out images (uint8 [B, H, W, C]) and the same in model space."""
        source = datasets.get_source(self.config, split="eval")
        images = np.stack([source[i][0] for i in range(count)])
        return images, self.scaler(jnp.asarray(images, jnp.float32) / 255.0)

    def to_uint8(self, x):
        return image_io.to_uint8(self.inverse_scaler(np.asarray(x)))


def inpainting_rows(model: Model, rng, count: int = 10):
    """Held-out digits, the same with the middle quarter of the rows hidden, completed."""
    images, data = model.test_images(count)
    size = model.config.data.image_size
    mask = np.ones(data.shape, np.float32)
    mask[:, 3 * size // 8 : 5 * size // 8] = 0.0
    inpaint = controllable.get_pc_inpainter(model.sde, model.score_fn, data.shape, **model.pc)
    inpainted = inpaint(rng, model.params, data, mask)
    return np.concatenate([images, images * mask.astype(np.uint8), model.to_uint8(inpainted)])


def colorization_rows(model: Model, rng, count: int = 10):
    """Held-out colour digits, their gray levels (as RGB), colorized."""
    images, data = model.test_images(count)
    gray = jnp.mean(data, axis=-1, keepdims=True)
    colorize = controllable.get_pc_colorizer(model.sde, model.score_fn, data.shape, **model.pc)
    colorized = colorize(rng, model.params, gray)
    gray_rgb = model.to_uint8(jnp.repeat(gray, 3, axis=-1))
    return np.concatenate([images, gray_rgb, model.to_uint8(colorized)])


def save(images, name: str, nrow: int) -> None:
    """Writes uint8 images [N, H, W, C] as a grid of rows of ``nrow`` to ``--out``/``name``."""
    grid = image_io.image_grid(images, nrow=nrow, scale=SCALE)
    path = os.path.join(FLAGS.out, name)
    PIL.Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    logging.info("Wrote %s.", path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    os.makedirs(FLAGS.out, exist_ok=True)
    start = time.time()
    keys = jax.random.split(jax.random.PRNGKey(FLAGS.seed), 4)
    digits = Model("digits", FLAGS.num_steps)
    colors = Model("color_digits", FLAGS.num_steps)
    save(digits.samples(keys[0], 64), "digits_samples.png", nrow=16)
    save(colors.samples(keys[1], 64), "color_digits_samples.png", nrow=16)
    save(inpainting_rows(digits, keys[2]), "inpainting.png", nrow=10)
    save(colorization_rows(colors, keys[3]), "colorization.png", nrow=10)
    logging.info("Done in %.0f s.", time.time() - start)


if __name__ == "__main__":
    app.run(main)
