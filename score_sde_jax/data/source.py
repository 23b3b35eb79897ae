"""`Source`: a random-access dataset, ``source[i] -> (example, label)``, with one example shape.

An example is a uint8 ``[H, W, C]`` image already cropped and resized to ``data.image_size`` (or a
float32 ``[d]`` point); the input pipeline (`data.pipeline`) shuffles, flips and dequantizes.
"""

import numpy as np

from score_sde_jax.data import preprocessing


class Source:
    """A random-access dataset: ``source[i] -> (example, label)`` with a fixed example shape.

    Attributes:
      name: description used in messages.
      shape: shape of every example ([H, W, C], or [d] for points).
      is_image: uint8 images (flip / dequantization / scaling apply) rather than float points.
    """

    def __init__(self, name, num_examples, read, preprocess, shape, *, is_image, channels=None):
        self.name = name
        self.shape = tuple(shape)
        self.is_image = is_image
        self._num_examples = num_examples
        self._read = read
        self._preprocess = preprocess
        self._channels = channels  # (num_channels, convert) for images

    def __len__(self) -> int:
        return self._num_examples

    def __getitem__(self, index: int):
        if not 0 <= index < self._num_examples:
            raise IndexError(f"Index {index} out of range for {self.name} ({len(self)} examples).")
        example, label = self._read(int(index))
        what = f"{self.name} example {index}"
        if self.is_image:
            example = np.asarray(example, np.uint8)
            if example.ndim == 2:
                example = example[..., None]
            example = preprocessing.match_channels(example, *self._channels, what=what)
        example = self._preprocess(example)
        if example.shape != self.shape:
            raise ValueError(f"{what} has shape {example.shape}, expected {self.shape}.")
        return example, int(label)


def image_source(config, name: str, num_examples: int, read, preprocess) -> Source:
    """A `Source` of ``data.image_size`` images with ``data.num_channels`` channels.

    Args:
      config: reads ``data.image_size``, ``data.num_channels``, ``data.convert_channels``.
      name: description used in messages.
      num_examples: the dataset's length.
      read: ``read(i) -> (uint8 image [H, W, C] or [H, W], label)``.
      preprocess: uint8 image -> uint8 image of the target size.
    """
    size, channels = config.data.image_size, config.data.num_channels
    return Source(
        name,
        num_examples,
        read,
        preprocess,
        (size, size, channels),
        is_image=True,
        channels=(channels, bool(config.data.get("convert_channels", False))),
    )
