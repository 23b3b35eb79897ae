"""The sampling driver: samples of a trained model, sharded over every device, to files.

The library behind ``python -m score_sde_jax.sample`` and the sampling mode of ``evaluate``:
`Generator` / `generate`
(samples by global index along a 1-D ``('data',)`` mesh, with a progress log) and
`sample_to_file`. Sample i depends only on (seed, i) (`get_sample_fn`); images are rounded to
uint8 (`image_io.to_uint8`). See docs/sampling.md#the-sampling-driver.
"""

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import checkpoints, distributed, models, progress
from score_sde_jax.data import datasets, image_io, pipeline
from score_sde_jax.sampling import registry
from score_sde_jax.sampling.common import prior_sample

# Key streams folded into each sample's key.
_PRIOR_STREAM, _SAMPLER_STREAM = 0, 1


# ----------------------------------------------------------------------------------------------
# Sharded generation.
# ----------------------------------------------------------------------------------------------


def get_sample_fn(config, spec: registry.SamplerSpec, batch_size: int):
    """``fn(keys, params) -> (x, nfe)``: the `registry` sampler of ``spec`` for per-sample keys.

    Sample i's key is ``fold_in(PRNGKey(seed), i)`` (`Generator`); its prior draw x(T) comes
    from ``fold_in(key, 0)`` and the sampler's noise from ``fold_in(key, 1)``, so all samplers of
    one seed start from the same x(T). ``x`` is in model space [B, ...] and ``nfe`` [B] the score
    evaluations each sample took.
    """
    shape = (batch_size, *pipeline.image_shape(config))
    model_fn = models.get_model_fn(models.get_model(config))
    sampler = registry.get_sampler(config, model_fn, shape, spec)
    sde = registry.get_sde(config, spec)

    def sample_fn(keys, params):
        prior_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, _PRIOR_STREAM)
        z = prior_sample(sde, prior_keys, shape)
        sampler_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, _SAMPLER_STREAM)
        # Deterministic samplers only read z; the others draw their noise from per-sample keys.
        x, nfe = sampler(sampler_keys, params, z=z)
        return x, jnp.broadcast_to(jnp.asarray(nfe, jnp.int32), (batch_size,))

    return sample_fn


class Generator:
    """Generates samples by global index, sharded over a ``('data',)`` mesh.

    Args:
      config: the model's config.
      spec: the `SamplerSpec`.
      batch_size: global samples per call; must be a multiple of the mesh size.
      mesh: 1-D ``('data',)`` mesh (default: every device of every process).
      raw: return the samples in model space (float32, before the inverse data scaler and the
        conversion to uint8).

    ``generator(params, seed, start)`` returns samples ``start .. start + batch_size - 1`` of
    ``seed`` as host arrays ``(samples, nfe)``: uint8 NHWC images (float32 points for ``TOY2D``)
    and int32 NFE per sample, identical on every process.
    """

    def __init__(self, config, spec: registry.SamplerSpec, batch_size: int, mesh=None, raw=False):
        self.mesh = distributed.create_mesh() if mesh is None else mesh
        num_devices = self.mesh.devices.size
        if batch_size <= 0 or batch_size % num_devices:
            raise ValueError(
                f"The sampling batch size {batch_size} must be a positive multiple of the number "
                f"of devices ({num_devices})."
            )
        self.batch_size = batch_size
        self.is_image = datasets.is_image(config)
        self._split = NamedSharding(self.mesh, P("data"))
        replicated = NamedSharding(self.mesh, P())
        sample_fn = get_sample_fn(config, spec, batch_size)
        inverse_scaler = pipeline.get_data_inverse_scaler(config)
        to_output = (
            (lambda x: image_io.to_uint8(inverse_scaler(x))) if self.is_image and not raw else None
        )

        def run(indices, seed, params):
            base = jax.random.PRNGKey(seed)
            keys = jax.vmap(jax.random.fold_in, (None, 0))(base, indices)
            x, nfe = sample_fn(keys, params)
            return (x if to_output is None else to_output(x)), nfe

        self._run = jax.jit(
            run,
            in_shardings=(self._split, replicated, replicated),
            out_shardings=(self._split, self._split),
        )

    def __call__(self, params, seed: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        indices = np.arange(start, start + self.batch_size, dtype=np.uint32)
        global_indices = jax.make_array_from_callback(
            indices.shape, self._split, lambda index: indices[index]
        )
        x, nfe = self._run(global_indices, np.uint32(seed), params)
        return distributed.to_host(x), distributed.to_host(nfe)


def generate(
    generator: Generator,
    params,
    *,
    seed: int,
    num_samples: int,
    start: int = 0,
    log_every: int = 1,
    on_batch: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``start .. start + num_samples - 1`` of ``seed`` in batches, logging progress.

    The last batch is filled up with the following indices, which are computed and dropped, so
    every batch has one shape (one compilation).

    Args:
      generator: a `Generator`.
      params: the EMA parameters (replicated over the generator's mesh).
      seed: the sampling seed.
      num_samples: how many samples.
      start: global index of the first sample.
      log_every: log a progress line every this many batches.
      on_batch: called as ``on_batch(first_index, samples, nfe)`` after every batch.

    Returns:
      ``(samples, nfe)`` host arrays of length ``num_samples``.
    """
    num_batches = math.ceil(num_samples / generator.batch_size)
    outputs, nfes = [], []
    tic = time.time()
    with progress.bar(num_samples, "sampling", unit="sample") as samples_bar:
        with progress.steps():
            for b in range(num_batches):
                progress.reset()
                first = start + b * generator.batch_size
                x, nfe = generator(params, seed, first)
                keep = min(generator.batch_size, num_samples - b * generator.batch_size)
                outputs.append(x[:keep])
                nfes.append(nfe[:keep])
                samples_bar.update(keep)
                if on_batch is not None:
                    on_batch(first, outputs[-1], nfes[-1])
                if (b + 1) % log_every == 0 or b + 1 == num_batches:
                    _log_batch(b + 1, num_batches, outputs, nfes, num_samples, tic)
    return np.concatenate(outputs), np.concatenate(nfes)


def _log_batch(done, num_batches, outputs, nfes, num_samples, tic) -> None:
    elapsed = time.time() - tic
    logging.info(
        "batch %d/%d: %d/%d samples | NFE per sample %s | %.1f s elapsed, ETA %.0f s",
        done,
        num_batches,
        sum(len(o) for o in outputs),
        num_samples,
        _describe_nfe(np.concatenate(nfes)),
        elapsed,
        elapsed / done * (num_batches - done),
    )


def _describe_nfe(nfe: np.ndarray) -> str:
    if nfe.min() == nfe.max():
        return str(int(nfe[0]))
    return f"mean {nfe.mean():.1f} (min {nfe.min()}, max {nfe.max()})"


def save_samples(path, samples: np.ndarray, nfe: np.ndarray, metadata: dict, grid_size: int = 64):
    """Writes ``samples`` (key ``images`` for uint8 images, ``points`` for toy data), ``nfe`` and
    ``metadata`` (JSON string) to the ``.npz`` ``path`` and a PNG next to it (``.png``): a grid
    of the first ``grid_size`` images, or a scatter plot of the points.

    Returns:
      The PNG's path.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    key = "images" if samples.dtype == np.uint8 else "points"
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **{key: samples}, nfe=nfe, metadata=np.array(json.dumps(metadata)))
    os.replace(tmp, path)
    png = os.path.splitext(path)[0] + ".png"
    if key == "images":
        image_io.save_image_grid(samples[:grid_size], png)
    else:
        image_io.save_scatter_png(samples, png)
    return png


def default_batch_size(config, num_samples: int, num_devices: int) -> int:
    """min(eval.batch_size, num_samples) rounded up to a multiple of the device count."""
    batch = min(int(config.eval.batch_size), num_samples)
    return math.ceil(batch / num_devices) * num_devices


def sample_to_file(
    config=None,
    *,
    workdir=None,
    checkpoint=None,
    spec: registry.SamplerSpec | None = None,
    num_samples: int = 64,
    batch_size: int | None = None,
    seed: int = 0,
    output=None,
    mesh=None,
) -> str:
    """What ``python -m score_sde_jax.sample`` does: load, sample, write ``.npz`` + ``.png``.

    Args:
      config: the model's config; None: the one saved with the run (`checkpoints.resolve_config`).
      workdir: the training run (checkpoints; default output folder).
      checkpoint: see `checkpoints.load_checkpoint_params`.
      spec: the `SamplerSpec` (default: ``config.sampling.method`` with default options).
      num_samples: number of samples.
      batch_size: global samples per step (default `default_batch_size`).
      seed: sample i uses ``fold_in(PRNGKey(seed), i)``.
      output: the ``.npz`` path; default ``<workdir>/samples/<ckpt>_<sampler>_seed<seed>.npz``.
      mesh: the ``('data',)`` mesh (default: every device of every process).

    Returns:
      The path of the ``.npz`` (written by process 0).

    Raises:
      ValueError / FileNotFoundError: bad arguments, nothing to load (clear messages).
    """
    if workdir is None and output is None:
        raise ValueError("Pass --workdir or --output (where to write the samples).")
    if num_samples < 1:
        raise ValueError(f"--num_samples must be >= 1, got {num_samples}.")
    config = checkpoints.resolve_config(config, workdir, checkpoint)
    mesh = distributed.create_mesh() if mesh is None else mesh
    spec = spec or registry.SamplerSpec()
    if spec.name is None:
        spec = dataclasses.replace(spec, name=str(config.sampling.method).lower())
    batch_size = batch_size or default_batch_size(config, num_samples, mesh.devices.size)
    loaded = checkpoints.load_checkpoint_params(
        config, workdir=workdir, checkpoint=checkpoint, mesh=mesh
    )
    generator = Generator(config, spec, batch_size, mesh)
    logging.info(
        "Sampling %d from %s (%s checkpoint, step %s) with %s, seed %d, batch %d on %d devices "
        "/ %d processes.",
        num_samples,
        loaded.path,
        loaded.source,
        loaded.step,
        spec.describe(),
        seed,
        batch_size,
        mesh.devices.size,
        jax.process_count(),
    )
    samples, nfe = generate(generator, loaded.params, seed=seed, num_samples=num_samples)
    output = output or os.path.join(workdir, "samples", f"{loaded.tag}_{spec.name}_seed{seed}.npz")
    if jax.process_index() == 0:
        metadata = {
            "checkpoint": loaded.path,
            "checkpoint_source": loaded.source,
            "step": loaded.step,
            "sampler": spec.describe(),
            "seed": seed,
            "num_samples": num_samples,
            "key_rule": "sample i: fold_in(PRNGKey(seed), i)",
        }
        png = save_samples(output, samples, nfe, metadata)
        logging.info("Wrote %s and %s (mean NFE per sample %.1f).", output, png, nfe.mean())
    return output
