"""The sampling driver: samples of a trained model, sharded over every device, to files.

The library behind ``python -m score_sde_jax.sample`` and the sampling mode of ``evaluate``:
checkpoint loading (`load_checkpoint_params`, `load_run_config`), `Generator` / `generate`
(samples by global index along a 1-D ``('data',)`` mesh, with a progress log) and
`sample_to_file`. Sample i depends only on (seed, i) (`get_sample_fn`); images are rounded to
uint8 (`to_uint8`). See docs/sampling.md#the-sampling-driver.
"""

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import checkpoints, distributed, models
from score_sde_jax.data import datasets, image_io, pipeline
from score_sde_jax.sampling import registry
from score_sde_jax.sampling.common import prior_sample

CHECKPOINT_DIR = "checkpoints"
# Key streams folded into each sample's key.
_PRIOR_STREAM, _SAMPLER_STREAM = 0, 1


# ----------------------------------------------------------------------------------------------
# Configs and checkpoints.
# ----------------------------------------------------------------------------------------------


def config_from_json(data) -> ml_collections.ConfigDict:
    """A ConfigDict from a JSON string or decoded dict (lists become tuples, as in the configs)."""
    if isinstance(data, str):
        data = json.loads(data)

    def convert(node):
        if isinstance(node, dict):
            return {k: convert(v) for k, v in node.items()}
        if isinstance(node, list):
            return tuple(convert(v) for v in node)
        return node

    return ml_collections.ConfigDict(convert(data))


def checkpoint_dir(workdir) -> str:
    """``<workdir>/checkpoints``, where ``train`` writes its checkpoints."""
    return os.path.join(os.fspath(workdir), CHECKPOINT_DIR)


def available_steps(workdir) -> list[int]:
    """Steps of the finished (committed) ``train`` checkpoints in ``workdir``, ascending."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(ocp.utils.checkpoint_steps(directory))


def _step_dir(workdir, step: int) -> str:
    return os.path.join(checkpoint_dir(workdir), str(step))


def load_run_config(workdir, step: int | None = None) -> ml_collections.ConfigDict:
    """The config that ``train`` saved with checkpoint ``step`` (default: the latest).

    Raises:
      FileNotFoundError: no checkpoint (or none with a saved config) in ``workdir``; the message
        says to pass ``--config``.
    """
    steps = available_steps(workdir)
    if step is None and steps:
        step = steps[-1]
    path = None if step is None else os.path.join(_step_dir(workdir, step), checkpoints.CONFIG)
    if path is None or not os.path.isdir(path):
        raise FileNotFoundError(
            f"No config saved with the checkpoints in {checkpoint_dir(workdir)} (steps found: "
            f"{steps}); pass --config=PATH (the config the model was trained with)."
        )
    return config_from_json(ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path))


def resolve_config(config, workdir=None, checkpoint=None):
    """``config`` if given, else the config saved with the ``train`` checkpoint to be used.

    Args:
      config: a ConfigDict or None.
      workdir: the training run.
      checkpoint: the ``--checkpoint`` value (a step number picks that step's saved config).

    Raises:
      ValueError: a released checkpoint file (which has no config) without ``config``.
      FileNotFoundError: no saved config in ``workdir``.
    """
    if config is not None:
        return config
    if checkpoint is not None and os.path.isfile(str(checkpoint)):
        raise ValueError(
            f"--checkpoint={checkpoint} is a released checkpoint file, which carries no config: "
            "pass --config=PATH (the config it was trained with)."
        )
    if workdir is None:
        raise ValueError("Pass --workdir (a training run), or --config and --checkpoint=PATH.")
    step = int(checkpoint) if checkpoint is not None and str(checkpoint).isdigit() else None
    return load_run_config(workdir, step)


def abstract_params(config):
    """Shapes and dtypes of the network's parameters, without computing them."""
    model = models.get_model(config)
    x = jax.ShapeDtypeStruct((1, *pipeline.image_shape(config)), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), jnp.float32)
    variables = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.PRNGKey(0), x, labels
    )
    return variables["params"]


def restore_ema_params(config, workdir, step: int, mesh: jax.sharding.Mesh):
    """The EMA parameters of ``train`` checkpoint ``step``, replicated over ``mesh``.

    Only the EMA leaves are read (orbax partial restore), so neither the optimizer state nor the
    device count of the training run matter.

    Raises:
      FileNotFoundError: no such step (the message lists the available ones).
      checkpoints.CheckpointMismatchError: the checkpoint's network differs from ``config``'s.
    """
    path = os.path.join(_step_dir(workdir, step), checkpoints.STATE)
    if step not in available_steps(workdir) or not os.path.isdir(path):
        raise FileNotFoundError(
            f"No checkpoint for step {step} in {checkpoint_dir(workdir)}; available steps: "
            f"{available_steps(workdir)}."
        )
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    saved = traverse_util.flatten_dict(tree["train_state"]["ema_params"])
    expected = traverse_util.flatten_dict(abstract_params(config))
    problems = [
        f"{'/'.join(k)}: checkpoint {tuple(saved[k].shape)}, network {v.shape}"
        for k, v in expected.items()
        if k in saved and tuple(saved[k].shape) != v.shape
    ]
    problems += [f"{'/'.join(k)}: not in the checkpoint" for k in expected if k not in saved]
    problems += [f"{'/'.join(k)}: not in the network" for k in saved if k not in expected]
    if problems:
        raise checkpoints.CheckpointMismatchError(
            f"Checkpoint {path} does not fit the network of this config ({len(problems)} "
            f"differences, e.g. {problems[:5]}); pass the config the model was trained with."
        )
    replicated = NamedSharding(mesh, P())
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
        traverse_util.unflatten_dict(expected),
    )
    item = {"train_state": {"ema_params": target}}
    restored = checkpointer.restore(
        path,
        args=ocp.args.PyTreeRestore(
            item=item,
            restore_args=jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), item),
            partial_restore=True,
        ),
    )
    return restored["train_state"]["ema_params"]


def _is_pytorch_file(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    # PyTorch files are zip archives (torch >= 1.6) or bare pickles (protocol 2..5).
    return head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05")


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """EMA parameters and where they came from."""

    params: object
    step: int | None
    source: str  # 'train', 'original' or 'pytorch'
    path: str
    tag: str  # short name for output files


def load_checkpoint_params(config, *, workdir=None, checkpoint=None, mesh=None):
    """Loads the EMA parameters named by ``checkpoint`` (the ``--checkpoint`` flag).

    Args:
      config: the model's config.
      workdir: a ``train`` work directory (needed unless ``checkpoint`` is a file).
      checkpoint: None (the latest ``train`` checkpoint in ``workdir``), a step number (int or
        digit string) of ``workdir``, or the path of a released checkpoint file: an original
        ``checkpoint_<k>`` (flax msgpack) or a PyTorch-port ``.pth``, detected by content.
      mesh: the mesh to replicate the parameters over (default: all devices).

    Returns:
      A `LoadedCheckpoint`.

    Raises:
      FileNotFoundError: nothing to load, e.g. an unknown step (the message lists the steps).
      ValueError: ``checkpoint`` is not a file and there is no ``workdir``; the checkpoint's
        network differs from ``config``'s (`checkpoints.CheckpointMismatchError`).
    """
    mesh = distributed.create_mesh() if mesh is None else mesh
    replicated = NamedSharding(mesh, P())
    spec = None if checkpoint is None else str(checkpoint)
    if spec is not None and os.path.isfile(spec):
        if _is_pytorch_file(spec):
            params, step = checkpoints.load_pytorch(spec, config)
            source = "pytorch"
        else:
            params, step = checkpoints.load_original(spec, config)
            source = "original"
        tag = os.path.splitext(os.path.basename(spec))[0]
        return LoadedCheckpoint(jax.device_put(params, replicated), step, source, spec, tag)
    if workdir is None:
        raise ValueError(
            f"--checkpoint={spec!r} is not a file; pass --workdir of a training run (and a step "
            "number) or the path of a checkpoint file."
        )
    steps = available_steps(workdir)
    if spec is None:
        if not steps:
            raise FileNotFoundError(
                f"No checkpoints in {checkpoint_dir(workdir)}; train first or pass "
                "--checkpoint=PATH of a checkpoint file."
            )
        step = steps[-1]
    elif spec.isdigit():
        step = int(spec)
    else:
        raise FileNotFoundError(
            f"--checkpoint={spec!r} is neither a step number nor an existing file; steps in "
            f"{checkpoint_dir(workdir)}: {steps}."
        )
    params = restore_ema_params(config, workdir, step, mesh)
    return LoadedCheckpoint(params, step, "train", _step_dir(workdir, step), f"step_{step}")


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


def to_uint8(x) -> jax.Array:
    """Images in [0, 1] -> uint8 by rounding (k / 255 -> k); out-of-range values are clipped."""
    return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


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
        self.is_image = datasets.canonical_name(config.data.dataset) != "TOY2D"
        self._split = NamedSharding(self.mesh, P("data"))
        replicated = NamedSharding(self.mesh, P())
        sample_fn = get_sample_fn(config, spec, batch_size)
        inverse_scaler = pipeline.get_data_inverse_scaler(config)
        to_output = (lambda x: to_uint8(inverse_scaler(x))) if self.is_image and not raw else None

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
    for b in range(num_batches):
        first = start + b * generator.batch_size
        x, nfe = generator(params, seed, first)
        keep = min(generator.batch_size, num_samples - b * generator.batch_size)
        x, nfe = x[:keep], nfe[:keep]
        outputs.append(x)
        nfes.append(nfe)
        if on_batch is not None:
            on_batch(first, x, nfe)
        done = b + 1
        if done % log_every == 0 or done == num_batches:
            elapsed = time.time() - tic
            eta = elapsed / done * (num_batches - done)
            all_nfe = np.concatenate(nfes)
            logging.info(
                "[%s] batch %d/%d: %d/%d samples | NFE per sample %s | %.1f s elapsed, ETA %.0f s",
                "#" * int(20 * done / num_batches) + "." * (20 - int(20 * done / num_batches)),
                done,
                num_batches,
                sum(len(o) for o in outputs),
                num_samples,
                _describe_nfe(all_nfe),
                elapsed,
                eta,
            )
    return np.concatenate(outputs), np.concatenate(nfes)


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
      config: the model's config; None: the one saved with the run (`resolve_config`).
      workdir: the training run (checkpoints; default output folder).
      checkpoint: see `load_checkpoint_params`.
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
    config = resolve_config(config, workdir, checkpoint)
    mesh = distributed.create_mesh() if mesh is None else mesh
    spec = spec or registry.SamplerSpec()
    if spec.name is None:
        spec = dataclasses.replace(spec, name=str(config.sampling.method).lower())
    batch_size = batch_size or default_batch_size(config, num_samples, mesh.devices.size)
    loaded = load_checkpoint_params(config, workdir=workdir, checkpoint=checkpoint, mesh=mesh)
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
