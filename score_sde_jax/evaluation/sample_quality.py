"""``eval.enable_sampling``: samples of every seed, their Inception outputs, FID / KID / IS.

``eval.num_samples`` samples per seed in rounds of ``eval.batch_size``; sample i of seed s is
``fold_in(PRNGKey(s), i)`` as in ``python -m score_sde_jax.sample --seed=s``. Round r ->
``ckpt_<k>/seed_<s>/samples_<r>.npz`` and ``statistics_<r>.npz``; the metrics of a seed are
computed from all its rounds against the dataset statistics (docs/evaluation.md#sampling-mode).
"""

import dataclasses
import math
import os

import jax
import numpy as np
from absl import logging

from score_sde_jax import distributed
from score_sde_jax.data import datasets
from score_sde_jax.evaluation import dataset_stats, inception, inception_weights, metrics, protocol
from score_sde_jax.evaluation.progress import Progress, save_npz
from score_sde_jax.progress import bar
from score_sde_jax.sampling import generation, registry


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
    if not datasets.is_image(config):
        raise ValueError(
            "eval.enable_sampling computes FID / IS / KID, which need images; "
            f"{datasets.canonical_name(config.data.dataset)} data are points. "
            "Set --config.eval.enable_sampling=False."
        )
    weights = inception_weights.resolve_weights_path(
        inception_weights_path or config.eval.get("inception_weights", None)
    )
    stats_path = stats_path or config.eval.get("stats_path", None)
    if not stats_path:
        stats_path = os.path.join("assets", "stats", dataset_stats.stats_filename(config))
    if not os.path.isfile(stats_path):
        raise FileNotFoundError(
            f"No dataset statistics at {stats_path}; compute them with `python -m "
            f"score_sde_jax.tools.stats --config=... --output={stats_path}` or pass "
            "--stats=PATH (eval.stats_path)."
        )
    return FIDResources(str(weights), str(stats_path))


def sampler_spec(config, sampler: registry.SamplerSpec | None) -> registry.SamplerSpec:
    """``sampler`` (the ``sample`` command's choices), named ``config.sampling.method`` if unnamed."""
    spec = sampler or registry.SamplerSpec()
    if spec.name is None:
        spec = dataclasses.replace(spec, name=str(config.sampling.method).lower())
    return spec


def inception_outputs(inception_fn, images: np.ndarray, batch_size: int) -> dict:
    """pool_3 and logits of uint8 images; each process runs its share, results are gathered."""
    images = inception.to_rgb(images)
    n, count = len(images), jax.process_count()
    share = -(-n // count)
    padded = np.concatenate([images, np.zeros((share * count - n, *images.shape[1:]), np.uint8)])
    mine = padded[jax.process_index() * share : (jax.process_index() + 1) * share]
    outputs = inception.compute_inception_outputs(inception_fn, [mine], batch_size)
    return {k: distributed.to_host(v)[:n] for k, v in outputs.items()}


def sample_metrics(pool_3: np.ndarray, logits: np.ndarray, data: dataset_stats.DatasetStats):
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


class SampleQuality:
    """The sampling mode: `units` of a checkpoint and `run`, which computes the missing ones.

    The sampler, Inception network and statistics are built on first use (a resumed run may not
    need them).
    """

    def __init__(self, config, spec, fid: FIDResources, mesh, eval_dir, inception_batch_size):
        self.config, self.spec, self.fid, self.mesh = config, spec, fid, mesh
        self.eval_dir, self.inception_batch_size = eval_dir, inception_batch_size
        self.seeds = protocol.sample_seeds(config)
        self.num_samples = int(config.eval.num_samples)
        self.batch_size = int(config.eval.batch_size)
        self.num_rounds = math.ceil(self.num_samples / self.batch_size)
        self._built = None

    def settings(self) -> dict:
        """What the samples and metrics depend on (`protocol.settings`' ``sampling`` group)."""
        return {"sampler": self.spec.describe(), **dataclasses.asdict(self.fid)}

    def units(self, k: int) -> list[str]:
        return [f"ckpt_{k}/seed_{s}/metrics" for s in self.seeds]

    def _build(self):
        if self._built is None:
            self._built = (
                generation.Generator(self.config, self.spec, self.batch_size, self.mesh),
                inception.make_inception_fn(
                    inception_weights.load_inception_params(self.fid.inception_weights)
                ),
                dataset_stats.load_stats(self.fid.stats_path),
            )
        return self._built

    def run(self, params, k: int, progress: Progress) -> dict:
        """FID / IS / KID of checkpoint ``k``: mean (and std) over the seeds, and per seed."""
        per_seed = {}
        for seed, unit in zip(self.seeds, self.units(k), strict=True):
            if unit not in progress:
                progress.record(unit, self._seed_metrics(params, k, seed, progress))
            per_seed[str(seed)] = progress[unit]
        result = {}
        for name in ("fid", "is", "kid"):
            values = [v[name] for v in per_seed.values() if v[name] is not None]
            result[name] = float(np.mean(values)) if values else None
            if len(values) > 1:
                result[f"{name}_std"] = float(np.std(values, ddof=1))
        result["per_seed"] = per_seed
        return result

    def _seed_metrics(self, params, k: int, seed: int, progress: Progress) -> dict:
        """Samples the missing rounds of checkpoint ``k`` / ``seed``, then scores all rounds."""
        folder = os.path.join(self.eval_dir, f"ckpt_{k}", f"seed_{seed}")
        os.makedirs(folder, exist_ok=True)
        pool_3, logits, nfe_sum = [], [], 0.0
        for r in bar(range(self.num_rounds), f"checkpoint {k}, seed {seed}", unit="round"):
            unit = f"ckpt_{k}/seed_{seed}/round_{r}"
            outputs = self._round(params, seed, r, folder, unit, progress)
            pool_3.append(outputs["pool_3"])
            logits.append(outputs["logits"])
            nfe_sum += progress[unit]["mean_nfe"] * progress[unit]["num_samples"]
        scores = sample_metrics(np.concatenate(pool_3), np.concatenate(logits), self._build()[2])
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

    def _round(self, params, seed: int, r: int, folder: str, unit: str, progress: Progress):
        """The Inception outputs of round ``r``: sampled and recorded, or read back."""
        if unit in progress:
            # Only rounds of earlier runs are read back: process 0 may still be writing this
            # run's files while the other processes get here.
            with np.load(os.path.join(folder, f"statistics_{r}.npz")) as z:
                return {name: z[name] for name in ("pool_3", "logits")}
        generator, inception_fn, _ = self._build()
        start = r * self.batch_size
        images, nfe = generation.generate(
            generator,
            params,
            seed=seed,
            num_samples=min(self.batch_size, self.num_samples - start),
            start=start,
        )
        save_npz(os.path.join(folder, f"samples_{r}.npz"), images=images, nfe=nfe)
        outputs = inception_outputs(inception_fn, images, self.inception_batch_size)
        save_npz(os.path.join(folder, f"statistics_{r}.npz"), **outputs)
        progress.record(unit, {"num_samples": len(images), "mean_nfe": float(nfe.mean())})
        return outputs
