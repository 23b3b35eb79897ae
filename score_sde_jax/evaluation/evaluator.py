"""Evaluation of a training run, checkpoint by checkpoint: `evaluate`.

For every checkpoint index k in ``[eval.begin_ckpt, eval.end_ckpt]`` it runs the modes the
config enables, as the original does (docs/original_code.md#training-evaluation-and-data):

* ``eval.enable_loss``: the training objective of the EMA parameters (no dropout) on every
  example of the held-out split, once, in dataset order (the last batch is padded and masked,
  not dropped) → ``ckpt_<k>_loss.npz`` (``all_losses``, ``mean_loss``).
* ``eval.enable_bpd``: bits/dim of the split ``eval.bpd_dataset`` ('test' = the held-out split,
  'train') under the probability-flow ODE (App. D.2): the data are uniformly dequantized afresh
  on each of ``eval.bpd_num_repeats`` passes (default: 5 for 'test', 1 for 'train', the
  original's counts), with Hutchinson probes of type ``eval.hutchinson_type`` ('rademacher',
  the default; 'gaussian'; 'exact'), tolerances ``eval.likelihood_rtol`` / ``likelihood_atol``
  (1e-5) and eps = 1e-5. Pass r → ``<bpd_dataset>_ckpt_<k>_bpd_<r>.npz`` (``bpd``, ``nfe``); the
  reported number is the mean over all passes and examples. For non-image data (``TOY2D``)
  there is no bit depth: the mode reports the negative log-likelihood in nats per example
  (``nll``), without dequantization.
* ``eval.enable_sampling``: ``eval.num_samples`` samples per seed of ``eval.sample_seeds``
  (default: ``[config.seed + 1]``), in rounds of ``eval.batch_size``; round r of seed s →
  ``ckpt_<k>/seed_<s>/samples_<r>.npz`` (uint8 ``images``, ``nfe``) and ``statistics_<r>.npz``
  (Inception ``pool_3``, ``logits``); then FID and KID against the dataset statistics
  (``eval.stats_path``, default ``assets/stats/<name>_stats.npz`` as in the original; made with
  ``python -m score_sde_jax.tools.stats``) and the Inception Score (see
  docs/original_code.md#training-evaluation-and-data). Grayscale images are replicated to three
  channels for the Inception network. The sampler is ``config.sampling.method`` with the
  ``config.sampling`` settings unless one is passed (the ``sample`` command's choices). There are
  ``ceil(num_samples / batch_size)`` rounds (the original ran ``num_samples // batch_size + 1`` and
  truncated); the last one keeps only the samples still needed.

Keys added to the original's ``eval`` section, all optional: ``bpd_num_repeats``,
``hutchinson_type``, ``likelihood_rtol``, ``likelihood_atol``, ``sample_seeds``, ``stats_path``,
``inception_weights``. Deliberate differences from the original: the eval loss is the mean over
every example (the original averaged batch means and dropped the last partial batch), bits/dim
passes also keep the last partial batch, and IS is reported at every resolution because the same
FID network is used throughout (the original switched networks at 256 px and reported IS = -1).

Checkpoint index ↔ file. ``train`` names checkpoints by optimizer step; checkpoint k is the one at
step ``k * training.snapshot_freq``, the step at which the original wrote its ``checkpoint_k``
(docs/original_code.md#training-evaluation-and-data). A work directory of the original code (files
``checkpoints/checkpoint_<k>``) is read as well. A missing checkpoint is waited for up to
``checkpoint_timeout`` seconds (training may still be writing it), then reported.

Resuming. Every finished unit (one loss pass, one bpd pass, one sampling round, one set of
metrics) is written to its file first and then recorded, with its numbers, in ``progress.json``
in the eval folder (atomic replace). A rerun of the same command skips every recorded unit and
continues where a preemption stopped it. The settings that determine the results (config, seeds,
sampler, Inception weights, statistics) are stored there too: rerunning with different settings
into the same folder is refused rather than mixing results.

Report. ``report.json`` lists every checkpoint's numbers, the numbers of the **last** checkpoint
(``end_ckpt``) and, separately, the **best** checkpoint for each metric (lowest FID, KID, loss, bpd;
highest IS) — the paper reports the best-FID checkpoint — together with the seeds used.

Randomness. All keys derive from ``eval_seed = config.seed + 1`` (the original's evaluation
key): loss batch b uses ``eval_key(config, LOSS_STREAM, b)``; bpd pass r uses the input
pipeline's dequantization with ``seed = bpd_data_seed(config, r)`` and Hutchinson probes from
``eval_key(config, BPD_STREAM, r, b)`` for batch b; sample i of seed s is
``fold_in(PRNGKey(s), i)`` exactly as in ``python -m score_sde_jax.sample --seed=s``, so any
round can be regenerated with that command.
"""

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import distributed, likelihood, models, sde_lib, training
from score_sde_jax.data import datasets, pipeline
from score_sde_jax.evaluation import inception, inception_weights, metrics
from score_sde_jax.sampling import generation
from score_sde_jax.tools import stats as stats_lib

LOSS_STREAM, BPD_STREAM = 0, 1
PROGRESS_FILE = "progress.json"
REPORT_FILE = "report.json"
_PROGRESS_VERSION = 1
# Eval keys that select what to run, not what the results are: changing them keeps the folder.
_SCHEDULING_KEYS = ("begin_ckpt", "end_ckpt", "enable_loss", "enable_bpd", "enable_sampling")


# ----------------------------------------------------------------------------------------------
# Seeds, settings, checkpoint mapping.
# ----------------------------------------------------------------------------------------------


def eval_seed(config) -> int:
    """``config.seed + 1``, the seed of the original's evaluation key.

    See docs/original_code.md#training-evaluation-and-data.
    """
    return int(config.seed) + 1


def eval_key(config, stream: int, *indices: int) -> jax.Array:
    """``fold_in(... fold_in(fold_in(PRNGKey(eval_seed), stream), i0) ..., in)``."""
    key = jax.random.fold_in(jax.random.PRNGKey(eval_seed(config)), stream)
    for index in indices:
        key = jax.random.fold_in(key, index)
    return key


def bpd_data_seed(config, repeat: int) -> int:
    """Input-pipeline seed of bpd pass ``repeat``: its dequantization noise."""
    return eval_seed(config) + int(repeat)


def bpd_num_repeats(config) -> int:
    """``eval.bpd_num_repeats``; unset: 5 passes over 'test', 1 over 'train', as in the original.

    See docs/original_code.md#likelihood.
    """
    repeats = config.eval.get("bpd_num_repeats", None)
    if repeats is None:
        return 5 if bpd_split(config) == "eval" else 1
    if int(repeats) < 1:
        raise ValueError(f"eval.bpd_num_repeats must be >= 1, got {repeats}.")
    return int(repeats)


def bpd_split(config) -> str:
    """The input-pipeline split of ``eval.bpd_dataset``: 'test' -> 'eval', 'train' -> 'train'."""
    name = str(config.eval.get("bpd_dataset", "test")).lower()
    if name not in ("test", "train"):
        raise ValueError(f"eval.bpd_dataset={name!r}; valid choices: 'test', 'train'.")
    return "eval" if name == "test" else "train"


def sample_seeds(config) -> list[int]:
    """``eval.sample_seeds`` (an int or a sequence); unset: ``[config.seed + 1]``."""
    seeds = config.eval.get("sample_seeds", None)
    if seeds is None:
        return [eval_seed(config)]
    seeds = [int(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"eval.sample_seeds must be distinct integers, got {seeds}.")
    return seeds


def checkpoint_step(config, ckpt: int) -> int:
    """Training step of checkpoint index ``ckpt``: ``ckpt * training.snapshot_freq``."""
    return int(ckpt) * int(config.training.snapshot_freq)


def checkpoint_indices(config) -> list[int]:
    """``range(eval.begin_ckpt, eval.end_ckpt + 1)``."""
    begin, end = int(config.eval.begin_ckpt), int(config.eval.end_ckpt)
    if begin < 1 or end < begin:
        raise ValueError(
            f"Need 1 <= eval.begin_ckpt <= eval.end_ckpt, got begin_ckpt={begin}, end_ckpt={end}."
        )
    return list(range(begin, end + 1))


def find_checkpoint(config, workdir, ckpt: int, timeout: float = 0.0, poll: float = 60.0):
    """The ``--checkpoint`` value of checkpoint index ``ckpt``: a ``train`` step or a file.

    Looks for the ``train`` checkpoint at step `checkpoint_step` and for the original's
    ``checkpoints/checkpoint_<ckpt>`` file, polling every ``poll`` seconds for up to ``timeout``.

    Raises:
      FileNotFoundError: neither exists after ``timeout`` seconds.
    """
    step = checkpoint_step(config, ckpt)
    original = os.path.join(generation.checkpoint_dir(workdir), f"checkpoint_{ckpt}")
    deadline = time.time() + timeout
    while True:
        if step in generation.available_steps(workdir):
            return step
        if os.path.isfile(original):
            return original
        if time.time() >= deadline:
            raise FileNotFoundError(
                f"Checkpoint {ckpt} not found: no step {step} (= {ckpt} x training.snapshot_freq "
                f"{config.training.snapshot_freq}) among the steps "
                f"{generation.available_steps(workdir)} in {generation.checkpoint_dir(workdir)}, "
                f"and no original file {original}. Check eval.begin_ckpt / eval.end_ckpt, or pass "
                "--checkpoint_timeout to wait for a running training job."
            )
        logging.info("Waiting for checkpoint %d (step %d) in %s ...", ckpt, step, workdir)
        time.sleep(max(0.0, min(poll, deadline - time.time())))


@dataclasses.dataclass(frozen=True)
class FIDResources:
    """What the sampling mode needs besides the model: the Inception and dataset statistics."""

    inception_weights: str
    stats_path: str


def resolve_fid_resources(config, inception_weights_path=None, stats_path=None) -> FIDResources:
    """Locates the Inception weights and dataset statistics, failing before any work is done.

    Raises:
      FileNotFoundError: no weight file (the message of `inception_weights.resolve_weights_path`
        says where to put it; nothing is downloaded) or no statistics file.
      ValueError: the data are not images.
    """
    if datasets.canonical_name(config.data.dataset) == "TOY2D":
        raise ValueError(
            "eval.enable_sampling computes FID / IS / KID, which need images; TOY2D data are "
            "points. Set --config.eval.enable_sampling=False."
        )
    weights = inception_weights.resolve_weights_path(
        inception_weights_path or config.eval.get("inception_weights", None)
    )
    stats_path = stats_path or config.eval.get("stats_path", None)
    if not stats_path:
        stats_path = os.path.join("assets", "stats", stats_lib.stats_filename(config))
    if not os.path.isfile(stats_path):
        raise FileNotFoundError(
            f"No dataset statistics at {stats_path}; compute them with `python -m "
            f"score_sde_jax.tools.stats --config=... --output={stats_path}` or pass "
            "--stats=PATH (eval.stats_path)."
        )
    return FIDResources(str(weights), str(stats_path))


def settings(config, spec: generation.SamplerSpec, fid: FIDResources | None) -> dict:
    """What the stored results depend on, by group: ``config`` always, ``sampling`` (sampler,
    Inception weights, statistics) when the sampling mode runs. Compared on resume."""
    config_dict = json.loads(config.to_json_best_effort())
    for key in _SCHEDULING_KEYS:
        config_dict["eval"].pop(key, None)
    groups = {"config": config_dict}
    if fid is not None:
        groups["sampling"] = {"sampler": spec.describe(), **dataclasses.asdict(fid)}
    return json.loads(json.dumps(groups))


# ----------------------------------------------------------------------------------------------
# Host helpers.
# ----------------------------------------------------------------------------------------------


def _gather(local: np.ndarray) -> np.ndarray:
    """Process-local rows (in process order) -> all rows, on every process."""
    if jax.process_count() == 1:
        return np.asarray(local)
    return np.asarray(multihost_utils.process_allgather(np.asarray(local), tiled=True))


def _save_npz(path: str, **arrays) -> None:
    """Writes an ``.npz`` atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")


def _write_json(path: str, data: dict) -> None:
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=_json_default, allow_nan=True)
    os.replace(tmp, path)


class Progress:
    """The record of finished units in ``<eval_dir>/progress.json``.

    Raises (on creation):
      ValueError: the folder holds results made with other settings.
    """

    def __init__(self, eval_dir: str, run_settings: dict):
        self.path = os.path.join(eval_dir, PROGRESS_FILE)
        self.done: dict[str, dict] = {}
        self.settings = dict(run_settings)
        if os.path.isfile(self.path):
            with open(self.path) as f:
                stored = json.load(f)
            # A group absent on one side (e.g. sampling enabled only now) does not conflict.
            for group, value in stored.get("settings", {}).items():
                if group in run_settings and run_settings[group] != value:
                    raise ValueError(
                        f"{eval_dir} holds evaluation results made with different settings "
                        f"({_first_difference(value, run_settings[group], group + '.')}); pass "
                        "another --eval_folder or delete that folder."
                    )
                self.settings.setdefault(group, value)
            self.done = stored.get("done", {})
            if self.done:
                logging.info(
                    "Resuming: %d finished units recorded in %s.", len(self.done), self.path
                )

    def __contains__(self, unit: str) -> bool:
        return unit in self.done

    def __getitem__(self, unit: str) -> dict:
        return self.done[unit]

    def record(self, unit: str, result: dict) -> None:
        self.done[unit] = result
        _write_json(
            self.path, {"version": _PROGRESS_VERSION, "settings": self.settings, "done": self.done}
        )


def _first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: stored {a!r}, now {b!r}"


# ----------------------------------------------------------------------------------------------
# The three modes.
# ----------------------------------------------------------------------------------------------


class Evaluator:
    """Compiled loss / likelihood functions of one config on one mesh (see `evaluate`)."""

    def __init__(self, config, mesh):
        self.config = config
        self.mesh = mesh
        self.num_devices = mesh.devices.size
        batch_size = int(config.eval.batch_size)
        if batch_size % self.num_devices or batch_size % jax.process_count():
            raise ValueError(
                f"eval.batch_size={batch_size} must be divisible by the number of devices "
                f"({self.num_devices}) and processes ({jax.process_count()})."
            )
        self.is_image = datasets.canonical_name(config.data.dataset) != "TOY2D"
        self.split = NamedSharding(mesh, P("data"))
        self.replicated = NamedSharding(mesh, P())
        self.sde = sde_lib.get_sde(config)
        model = models.get_model(config)
        self.model_fn = models.get_model_fn(model)
        loss_fn = training.create_loss_fn(config, self.sde, model, train=False, per_example=True)
        self._loss_fn = jax.jit(
            loss_fn,
            in_shardings=(self.replicated, self.replicated, self.split),
            out_shardings=self.split,
        )
        self._likelihood_fn = None

    def _global(self, local: np.ndarray) -> jax.Array:
        return jax.make_array_from_process_local_data(self.split, np.asarray(local, np.float32))

    def _iterator(self, config, split: str, seed: int):
        train_iter, eval_iter = pipeline.create_datasets(
            config,
            seed=seed,
            data_dir=config.data.get("data_dir", None),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            evaluation=True,
        )
        return eval_iter if split == "eval" else train_iter

    def loss(self, params) -> np.ndarray:
        """Per-example eval losses over the whole held-out split, in dataset order."""
        values = []
        for b, batch in enumerate(self._iterator(self.config, "eval", eval_seed(self.config))):
            key = eval_key(self.config, LOSS_STREAM, b)
            loss = distributed.to_host(self._loss_fn(params, key, self._global(batch["image"])))
            values.append(loss[_gather(batch["mask"])])
        return np.concatenate(values)

    def likelihood_fn(self):
        """``fn(rng, params, x) -> (value [B], z, nfe [B])``: bpd (images) or nats (points)."""
        if self._likelihood_fn is None:
            e = self.config.eval
            kwargs = dict(
                hutchinson_type=str(e.get("hutchinson_type", "rademacher")),
                rtol=float(e.get("likelihood_rtol", 1e-5)),
                atol=float(e.get("likelihood_atol", 1e-5)),
            )
            score_fn = generation.continuous_time_score_fn(self.config, self.sde, self.model_fn)
            if self.is_image:
                fn = likelihood.get_likelihood_fn(
                    self.sde, score_fn, centered=bool(self.config.data.centered), **kwargs
                )
            else:
                log_prob_fn = likelihood.get_log_prob_fn(self.sde, score_fn, **kwargs)

                def fn(rng, params, x):
                    log_p, z, nfe = log_prob_fn(rng, params, x)
                    return -log_p, z, nfe

            self._likelihood_fn = fn
        return self._likelihood_fn

    def bpd_config(self):
        """The config of the bpd passes: dequantized data, eval.batch_size for either split."""
        config = ml_collections.ConfigDict(self.config.to_dict())
        config.data.uniform_dequantization = self.is_image
        config.training.batch_size = config.eval.batch_size
        return config

    def bpd(self, params, repeat: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-example bits/dim (nats for points) and NFE of bpd pass ``repeat``."""
        fn = self.likelihood_fn()
        config = self.bpd_config()
        values, nfes = [], []
        batches = self._iterator(config, bpd_split(self.config), bpd_data_seed(self.config, repeat))
        for b, batch in enumerate(batches):
            key = eval_key(self.config, BPD_STREAM, repeat, b)
            value, _, nfe = fn(key, params, self._global(batch["image"]))
            mask = _gather(batch["mask"])
            values.append(distributed.to_host(value)[mask])
            nfes.append(distributed.to_host(nfe)[mask])
            logging.info(
                "bpd pass %d, batch %d: mean %.5f over %d examples, mean NFE %.1f",
                repeat,
                b,
                float(values[-1].mean()),
                int(mask.sum()),
                float(nfes[-1].mean()),
            )
        return np.concatenate(values), np.concatenate(nfes)


def _inception_outputs(inception_fn, images: np.ndarray, batch_size: int) -> dict:
    """pool_3 and logits of uint8 images; each process runs its share, results are gathered."""
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, count = len(images), jax.process_count()
    share = -(-n // count)
    padded = np.concatenate([images, np.zeros((share * count - n, *images.shape[1:]), np.uint8)])
    mine = padded[jax.process_index() * share : (jax.process_index() + 1) * share]
    outputs = inception.compute_inception_outputs(inception_fn, [mine], batch_size)
    return {k: _gather(v)[:n] for k, v in outputs.items()}


def sample_metrics(pool_3: np.ndarray, logits: np.ndarray, data: stats_lib.DatasetStats) -> dict:
    """FID, KID (if the statistics hold features) and IS of one set of samples.

    See docs/original_code.md#training-evaluation-and-data.
    """
    mu, sigma = metrics.feature_stats(pool_3)
    result = {
        "fid": metrics.fid_from_stats(data.mu, data.sigma, mu, sigma),
        "is": metrics.inception_score(logits),
        "kid": None,
        "num_samples": len(pool_3),
    }
    if data.pool_3 is not None:
        result["kid"] = metrics.kid(data.pool_3, pool_3)
    return result


# ----------------------------------------------------------------------------------------------
# The driver.
# ----------------------------------------------------------------------------------------------


_LOWER_IS_BETTER = {"fid": True, "kid": True, "is": False, "loss": True, "bpd": True, "nll": True}


def _summarize(per_ckpt: dict, last: int, seeds: dict) -> dict:
    """The report: every checkpoint, the last one, and the best one per metric."""
    best = {}
    for name, lower in _LOWER_IS_BETTER.items():
        scored = [(v[name], k) for k, v in per_ckpt.items() if v.get(name) is not None]
        if scored:
            value, ckpt = (min if lower else max)(scored)
            best[name] = {"ckpt": ckpt, "value": value, "step": per_ckpt[ckpt]["step"]}
    return {
        "seeds": seeds,
        "last": {"ckpt": last, **per_ckpt.get(last, {})},
        "best": best,
        "checkpoints": {str(k): v for k, v in per_ckpt.items()},
    }


class _Sampling:
    """The sampling mode's resources, built on first use (a resumed run may not need them)."""

    def __init__(self, config, spec, fid: FIDResources, mesh, inception_batch_size: int):
        self.config, self.spec, self.fid, self.mesh = config, spec, fid, mesh
        self.inception_batch_size = inception_batch_size
        self.num_samples = int(config.eval.num_samples)
        self.batch_size = int(config.eval.batch_size)
        self.num_rounds = math.ceil(self.num_samples / self.batch_size)
        self._built = None

    def _build(self):
        if self._built is None:
            self._built = (
                generation.Generator(self.config, self.spec, self.batch_size, self.mesh),
                inception.make_inception_fn(
                    inception_weights.load_inception_params(self.fid.inception_weights)
                ),
                stats_lib.load_stats(self.fid.stats_path),
            )
        return self._built

    def run(self, params, k: int, seed: int, folder: str, progress: Progress, finish) -> dict:
        """Samples the missing rounds of checkpoint ``k`` / ``seed``, then scores all rounds."""
        generator, inception_fn, data_stats = self._build()
        os.makedirs(folder, exist_ok=True)
        pool_3, logits, nfe_sum = [], [], 0.0
        for r in range(self.num_rounds):
            unit = f"ckpt_{k}/seed_{seed}/round_{r}"
            if unit not in progress:
                start = r * self.batch_size
                images, nfe = generation.generate(
                    generator,
                    params,
                    seed=seed,
                    num_samples=min(self.batch_size, self.num_samples - start),
                    start=start,
                )
                _save_npz(os.path.join(folder, f"samples_{r}.npz"), images=images, nfe=nfe)
                outputs = _inception_outputs(inception_fn, images, self.inception_batch_size)
                _save_npz(os.path.join(folder, f"statistics_{r}.npz"), **outputs)
                finish(unit, {"num_samples": len(images), "mean_nfe": float(nfe.mean())})
            else:
                # Only rounds of earlier runs are read back: process 0 may still be writing
                # this run's files while the other processes get here.
                with np.load(os.path.join(folder, f"statistics_{r}.npz")) as z:
                    outputs = {name: z[name] for name in ("pool_3", "logits")}
            pool_3.append(outputs["pool_3"])
            logits.append(outputs["logits"])
            nfe_sum += progress[unit]["mean_nfe"] * progress[unit]["num_samples"]
        scores = sample_metrics(np.concatenate(pool_3), np.concatenate(logits), data_stats)
        scores["mean_nfe"] = nfe_sum / scores["num_samples"]
        logging.info(
            "Checkpoint %d, seed %d: FID %.4f, IS %.4f, KID %s",
            k,
            seed,
            scores["fid"],
            scores["is"],
            scores["kid"],
        )
        return scores


def evaluate(
    config,
    workdir,
    eval_folder: str = "eval",
    *,
    sampler: generation.SamplerSpec | None = None,
    inception_weights_path=None,
    stats_path=None,
    inception_batch_size: int = 250,
    checkpoint_timeout: float = 0.0,
    mesh=None,
    callback: Callable[[str, dict], None] | None = None,
) -> dict:
    """Evaluates checkpoints ``eval.begin_ckpt .. eval.end_ckpt`` of ``workdir`` (module doc).

    Args:
      config: the run's config (original keys plus the ``eval`` keys of the module docstring).
      workdir: the training work directory (``<workdir>/checkpoints``).
      eval_folder: results go to ``<workdir>/<eval_folder>``.
      sampler: the sampler of the sampling mode (default: ``config.sampling.method``).
      inception_weights_path: FID Inception weights (default ``eval.inception_weights``, then
        ``$SCORE_SDE_INCEPTION_WEIGHTS``, then ``~/.cache/score_sde_jax/...``).
      stats_path: dataset statistics (default ``eval.stats_path``, then
        ``assets/stats/<name>_stats.npz``).
      inception_batch_size: images per Inception call.
      checkpoint_timeout: seconds to wait for a checkpoint that does not exist yet.
      mesh: 1-D ``('data',)`` mesh (default: every device of every process).
      callback: ``callback(unit, result)`` after every finished unit (progress display, tests).

    Returns:
      The report (also written to ``<workdir>/<eval_folder>/report.json``).

    Raises:
      FileNotFoundError: missing Inception weights / statistics (checked before any work), a
        missing checkpoint.
      ValueError: inconsistent settings, or results of other settings in the eval folder.
    """
    mesh = distributed.create_mesh() if mesh is None else mesh
    e = config.eval
    spec = sampler or generation.SamplerSpec()
    if spec.name is None:
        spec = dataclasses.replace(spec, name=str(config.sampling.method).lower())
    ckpts = checkpoint_indices(config)
    do_loss = bool(e.get("enable_loss", False))
    do_bpd = bool(e.get("enable_bpd", False))
    do_sampling = bool(e.get("enable_sampling", False))
    fid = resolve_fid_resources(config, inception_weights_path, stats_path) if do_sampling else None
    evaluator = Evaluator(config, mesh)
    repeats = bpd_num_repeats(config) if do_bpd else 0
    seeds = sample_seeds(config) if do_sampling else []
    sampling = _Sampling(config, spec, fid, mesh, inception_batch_size) if do_sampling else None
    eval_dir = os.path.join(os.fspath(workdir), eval_folder)
    os.makedirs(eval_dir, exist_ok=True)
    progress = Progress(eval_dir, settings(config, spec, fid))
    bpd_key = "bpd" if evaluator.is_image else "nll"
    bpd_dataset = str(e.get("bpd_dataset", "test")).lower()

    def finish(unit, result):
        progress.record(unit, result)
        if callback is not None:
            callback(unit, result)

    per_ckpt = {}
    for k in ckpts:
        location = find_checkpoint(config, workdir, k, timeout=checkpoint_timeout)
        step = location if isinstance(location, int) else checkpoint_step(config, k)
        units = [f"ckpt_{k}/loss"] if do_loss else []
        units += [f"ckpt_{k}/{bpd_key}_{r}" for r in range(repeats)]
        units += [f"ckpt_{k}/seed_{s}/metrics" for s in seeds]
        params = None
        if any(u not in progress for u in units):
            loaded = generation.load_checkpoint_params(
                config, workdir=workdir, checkpoint=location, mesh=mesh
            )
            params = loaded.params
            logging.info("Checkpoint %d: %s (%s).", k, loaded.path, loaded.source)
        path = location
        if isinstance(location, int):
            path = os.path.join(generation.checkpoint_dir(workdir), str(location))
        result = {"step": step, "checkpoint": str(path)}

        if do_loss:
            unit = f"ckpt_{k}/loss"
            if unit not in progress:
                all_losses = evaluator.loss(params)
                mean_loss = float(all_losses.mean())
                path = os.path.join(eval_dir, f"ckpt_{k}_loss.npz")
                _save_npz(path, all_losses=all_losses, mean_loss=mean_loss)
                logging.info("Checkpoint %d: eval loss %.6g", k, mean_loss)
                finish(unit, {"loss": mean_loss, "num_examples": len(all_losses)})
            result["loss"] = progress[unit]["loss"]

        for r in range(repeats):
            unit = f"ckpt_{k}/{bpd_key}_{r}"
            if unit not in progress:
                values, nfe = evaluator.bpd(params, r)
                path = os.path.join(eval_dir, f"{bpd_dataset}_ckpt_{k}_{bpd_key}_{r}.npz")
                _save_npz(path, **{bpd_key: values}, nfe=nfe)
                logging.info("Checkpoint %d, pass %d: %s %.5f", k, r, bpd_key, values.mean())
                finish(
                    unit,
                    {
                        bpd_key: float(values.mean()),
                        "num_examples": len(values),
                        "mean_nfe": float(nfe.mean()),
                        "data_seed": bpd_data_seed(config, r),
                    },
                )
        if do_bpd:
            # Every pass covers the same examples: the mean of the means is the overall mean.
            result[bpd_key] = float(
                np.mean([progress[f"ckpt_{k}/{bpd_key}_{r}"][bpd_key] for r in range(repeats)])
            )

        if do_sampling:
            per_seed = {}
            for s in seeds:
                unit = f"ckpt_{k}/seed_{s}/metrics"
                if unit not in progress:
                    folder = os.path.join(eval_dir, f"ckpt_{k}", f"seed_{s}")
                    finish(unit, sampling.run(params, k, s, folder, progress, finish))
                per_seed[str(s)] = progress[unit]
            for name in ("fid", "is", "kid"):
                values = [v[name] for v in per_seed.values() if v[name] is not None]
                result[name] = float(np.mean(values)) if values else None
                if len(values) > 1:
                    result[f"{name}_std"] = float(np.std(values, ddof=1))
            result["per_seed"] = per_seed
        per_ckpt[k] = result

    report = _summarize(
        per_ckpt,
        ckpts[-1],
        {
            "eval_seed": eval_seed(config),
            "sample_seeds": seeds,
            "bpd_data_seeds": [bpd_data_seed(config, r) for r in range(repeats)],
        },
    )
    report.update(
        sampler=spec.describe(),
        num_samples=int(e.num_samples) if do_sampling else None,
        checkpoint_step_rule="step = ckpt * training.snapshot_freq",
        fid_resources=None if fid is None else dataclasses.asdict(fid),
    )
    _write_json(os.path.join(eval_dir, REPORT_FILE), report)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("evaluate_done")
    return report
