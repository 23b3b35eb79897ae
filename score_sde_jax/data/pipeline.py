"""Input pipeline: deterministic, per-process sharded, resumable batches in model space.

`create_datasets` returns grain iterators of ``{'image', 'label'[, 'mask']}`` NumPy batches; order,
flips and dequantization noise depend only on the seed, so a run resumes on any process count.
Also the data scalers. Details: docs/data.md#the-input-pipeline.
"""

import os
import threading

import grain
import jax
import numpy as np

from score_sde_jax.data import datasets

# A training stream has no end; grain needs a length, and 2**62 steps is unreachable.
_INFINITE_STEPS = 2**62
_SPLIT_IDS = {"train": 0, "eval": 1}


def image_shape(config) -> tuple[int, ...]:
    """Shape of one example: (H, W, C) = (image_size, image_size, num_channels), or (d,) for toy."""
    return datasets.example_shape(config)


def per_process_batch_size(global_batch_size: int, process_count: int, what: str) -> int:
    """``global_batch_size // process_count``; ValueError when it does not divide."""
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"{what}={global_batch_size} is the global batch size (over all processes); it must "
            f"be a positive multiple of the process count {process_count} so that each process "
            f"loads {what} / {process_count} examples per step."
        )
    return global_batch_size // process_count


def get_data_scaler(config):
    """x ↦ 2x − 1 when ``config.data.centered`` (VP / sub-VP configs), else the identity."""
    if config.data.centered:
        return lambda x: x * 2.0 - 1.0
    return lambda x: x


def get_data_inverse_scaler(config):
    """The inverse of `get_data_scaler`: x ↦ (x + 1)/2 when centered, else the identity."""
    if config.data.centered:
        return lambda x: (x + 1.0) / 2.0
    return lambda x: x


def uniform_dequantize(image: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(k + u) / 256 for uint8 k and u in [0, 1): float32 in [k / 256, (k + 1) / 256).

    In float32 k + u can round up to k + 1; the result is clamped just below (k + 1) / 256.
    """
    k = image.astype(np.float32)
    y = (k + u.astype(np.float32)) / np.float32(256)
    return np.minimum(y, np.nextafter((k + 1) / np.float32(256), np.float32(0)))


def to_model_space(image: np.ndarray, *, centered: bool, u: np.ndarray | None = None) -> np.ndarray:
    """uint8 image -> float32 in [0, 1] (k / 255, or dequantized with ``u``), 2y - 1 if centered."""
    y = image.astype(np.float32) / np.float32(255) if u is None else uniform_dequantize(image, u)
    return 2 * y - 1 if centered else y


class BatchLoader:
    """Maps a global step to this process's batch: ``loader(step) -> {'image', 'label'[, 'mask']}``.

    Args:
      source: a `source.Source`.
      seed: run seed; with the split and the epoch it fixes order, flips and dequantization.
      split: 'train' or 'eval' (decorrelates the two streams).
      global_batch_size: G, the batch over all processes.
      process_index, process_count: this process p and P; it loads G / P examples per step.
      single_pass: one pass in dataset order with a padded, masked last batch; else the infinite
        shuffled stream.
      random_flip, uniform_dequantization, centered: ``config.data`` options.
    """

    def __init__(
        self,
        source,
        *,
        seed: int,
        split: str,
        global_batch_size: int,
        process_index: int,
        process_count: int,
        single_pass: bool,
        random_flip: bool,
        uniform_dequantization: bool,
        centered: bool,
    ):
        self.source = source
        self.batch_size = per_process_batch_size(global_batch_size, process_count, "batch size")
        self.global_batch_size = global_batch_size
        self.offset = process_index * self.batch_size
        self.single_pass = single_pass
        self.random_flip = random_flip and source.is_image
        self.dequantize = uniform_dequantization and source.is_image
        self.centered = centered and source.is_image
        self._entropy = (int(seed) % 2**64, _SPLIT_IDS[split])
        self._permutations: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def num_steps(self) -> int:
        """Steps per pass (single pass), else effectively unbounded."""
        if not self.single_pass:
            return _INFINITE_STEPS
        return -(-len(self.source) // self.global_batch_size)

    def _permutation(self, epoch: int) -> np.ndarray:
        # Reader threads work on neighbouring steps: keep the few most recently made epochs.
        with self._lock:
            permutation = self._permutations.get(epoch)
            if permutation is None:
                rng = np.random.default_rng([*self._entropy, epoch])
                permutation = rng.permutation(len(self.source))
                self._permutations[epoch] = permutation
                while len(self._permutations) > 4:
                    del self._permutations[next(iter(self._permutations))]
            return permutation

    def transform(self, examples: np.ndarray, epochs: np.ndarray, indices: np.ndarray):
        """Source examples [b, ...] drawn as ``indices`` in ``epochs`` -> float32 model space.

        Each example's randomness is the SplitMix64 stream keyed by (seed, split, epoch, index):
        draw 1 decides the flip (top bit), draws 2, 3, ... give its pixels' dequantization noise
        (top 24 bits / 2^24). Both are always drawn, so switching one option never changes the
        other, and nothing depends on the batch or process layout.
        """
        if not self.source.is_image:
            return examples.astype(np.float32)
        keys = self._example_keys(epochs, indices)  # [b]
        if self.random_flip:
            flip = (_splitmix64(keys, 1) >> np.uint64(63)).astype(bool)
            examples = np.where(flip[:, None, None, None], examples[:, :, ::-1], examples)
        u = None
        if self.dequantize:
            draws = np.arange(2, 2 + np.prod(examples.shape[1:]), dtype=np.uint64)
            bits = _splitmix64(keys[:, None], draws[None, :]) >> np.uint64(40)
            u = (bits.astype(np.float32) * np.float32(2.0**-24)).reshape(examples.shape)
        return to_model_space(examples, centered=self.centered, u=u)

    def _example_keys(self, epochs: np.ndarray, indices: np.ndarray) -> np.ndarray:
        keys = np.empty(len(indices), np.uint64)
        for epoch in np.unique(epochs):
            seq = np.random.SeedSequence([*self._entropy, int(epoch)])
            epoch_key = seq.generate_state(1, np.uint64)[0]
            where = epochs == epoch
            keys[where] = _splitmix64(np.full(where.sum(), epoch_key), indices[where] + 1)
        return keys

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        n = len(self.source)
        positions = step * self.global_batch_size + self.offset + np.arange(self.batch_size)
        if self.single_pass:
            mask = positions < n
            epochs, indices = np.zeros(mask.sum(), np.int64), positions[mask]
        else:
            epochs, within = np.divmod(positions, n)
            indices = np.concatenate(
                [self._permutation(e)[within[epochs == e]] for e in np.unique(epochs)]
            )  # epochs are sorted: order kept
        examples = [self.source[int(i)] for i in indices]
        images = np.zeros((self.batch_size, *self.source.shape), np.float32)
        labels = np.zeros(self.batch_size, np.int32)
        if examples:
            x = self.transform(np.stack([e[0] for e in examples]), epochs, indices)
            images[: len(x)], labels[: len(x)] = x, [e[1] for e in examples]
        batch = {"image": images, "label": labels}
        if self.single_pass:
            batch["mask"] = mask
        return batch


def _splitmix64(key: np.ndarray, counter) -> np.ndarray:
    """Draw ``counter`` of the SplitMix64 generator seeded with ``key`` (uint64 arrays, broadcast).

    SplitMix64 (Steele, Lea & Flood 2014): state_t = key + t * golden gamma, output = mix(state_t).
    """
    z = np.asarray(key, np.uint64) + np.asarray(counter, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def make_iterator(loader: BatchLoader, config=None) -> grain.DatasetIterator:
    """A checkpointable grain iterator over ``loader(0), loader(1), ...`` read by threads."""
    data = config.data if config is not None else {}
    num_threads = int(data.get("num_threads", None) or min(8, os.cpu_count() or 1))
    prefetch = int(data.get("prefetch_batches", None) or 4)
    dataset = grain.MapDataset.range(loader.num_steps).map(loader)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(dataset.to_iter_dataset(options))


def create_datasets(
    config,
    *,
    seed: int,
    data_dir: str | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    evaluation: bool = False,
) -> tuple[grain.DatasetIterator, grain.DatasetIterator]:
    """Training and held-out iterators of ``config.data`` for this process.

    See docs/data.md#the-input-pipeline for the batches, model space, order and sharding.

    Args:
      config: the experiment config (``data.*``, ``training.batch_size``, ``eval.batch_size``).
      seed: fixes shuffling, flips and dequantization noise.
      data_dir: tfds data directory (default ``config.data.data_dir``, then $TFDS_DATA_DIR).
      process_index, process_count: this process and the number of processes (default
        ``jax.process_index()`` / ``jax.process_count()``).
      evaluation: single ordered pass over each split, no flips, padded last batch with ``mask``.

    Returns:
      (train_iter, eval_iter) grain DatasetIterators.

    Raises:
      ValueError: unknown dataset, a batch size not divisible by the process count, bad options.
      FileNotFoundError: data not prepared / not found (the message says how to prepare it).
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count}).")
    batch_sizes = {
        "train": per_process_batch_size(
            config.training.batch_size, process_count, "training.batch_size"
        ),
        "eval": per_process_batch_size(config.eval.batch_size, process_count, "eval.batch_size"),
    }
    iterators = []
    for split in ("train", "eval"):
        source = datasets.get_source(config, split, data_dir)
        loader = BatchLoader(
            source,
            seed=seed,
            split=split,
            global_batch_size=batch_sizes[split] * process_count,
            process_index=process_index,
            process_count=process_count,
            single_pass=evaluation,
            # The held-out split is never flipped; evaluation passes are never flipped.
            random_flip=bool(config.data.get("random_flip", False))
            and split == "train"
            and not evaluation,
            uniform_dequantization=bool(config.data.get("uniform_dequantization", False)),
            centered=bool(config.data.get("centered", False)),
        )
        iterators.append(make_iterator(loader, config))
    return iterators[0], iterators[1]
