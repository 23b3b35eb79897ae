"""``eval.enable_bpd``: bits/dim under the probability-flow ODE (App. D.2), pass by pass.

Pass r over the split ``eval.bpd_dataset`` dequantizes the data afresh (pipeline seed
`protocol.bpd_data_seed`) and draws Hutchinson probes from ``eval_key(config, BPD_STREAM, r, b)``
for batch b; checkpoint k, pass r -> ``<bpd_dataset>_ckpt_<k>_bpd_<r>.npz`` (``bpd``, ``nfe``). For
points (``TOY2D``) the value is the negative log-likelihood in nats (``nll``), not dequantized.
"""

import os

import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import distributed, likelihood, models, sde_lib
from score_sde_jax.data import datasets
from score_sde_jax.evaluation import data_passes, protocol
from score_sde_jax.evaluation.progress import Progress, save_npz
from score_sde_jax.progress import bar
from score_sde_jax.sampling import registry


class BitsPerDim:
    """The bits/dim mode: `units` of a checkpoint and `run`, which computes the missing ones."""

    def __init__(self, config, mesh, eval_dir: str):
        self.config, self.eval_dir = config, eval_dir
        self.is_image = datasets.is_image(config)
        self.metric = "bpd" if self.is_image else "nll"
        self.num_repeats = protocol.bpd_num_repeats(config)
        self.data_seeds = [protocol.bpd_data_seed(config, r) for r in range(self.num_repeats)]
        self.split = NamedSharding(mesh, P("data"))
        self._likelihood_fn = None

    def units(self, k: int) -> list[str]:
        return [f"ckpt_{k}/{self.metric}_{r}" for r in range(self.num_repeats)]

    def likelihood_fn(self):
        """``fn(rng, params, x) -> (value [B], z, nfe [B])``: bpd (images) or nats (points)."""
        if self._likelihood_fn is None:
            e = self.config.eval
            kwargs = dict(
                hutchinson_type=str(e.get("hutchinson_type", "rademacher")),
                rtol=float(e.get("likelihood_rtol", 1e-5)),
                atol=float(e.get("likelihood_atol", 1e-5)),
            )
            sde = sde_lib.get_sde(self.config)
            model_fn = models.get_model_fn(models.get_model(self.config))
            score_fn = registry.continuous_time_score_fn(self.config, sde, model_fn)
            if self.is_image:
                centered = bool(self.config.data.centered)
                fn = likelihood.get_likelihood_fn(sde, score_fn, centered=centered, **kwargs)
            else:
                log_prob_fn = likelihood.get_log_prob_fn(sde, score_fn, **kwargs)

                def fn(rng, params, x):
                    log_p, z, nfe = log_prob_fn(rng, params, x)
                    return -log_p, z, nfe

            self._likelihood_fn = fn
        return self._likelihood_fn

    def data_config(self):
        """The config of the passes: dequantized data, eval.batch_size for either split."""
        config = ml_collections.ConfigDict(self.config.to_dict())
        config.data.uniform_dequantization = self.is_image
        config.training.batch_size = config.eval.batch_size
        return config

    def bpd(self, params, repeat: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-example bits/dim (nats for points) and NFE of pass ``repeat``."""
        fn, values, nfes = self.likelihood_fn(), [], []
        split, seed = protocol.bpd_split(self.config), self.data_seeds[repeat]
        batches = data_passes.ordered_batches(self.data_config(), split, seed, self.split)
        for b, (x, mask) in enumerate(bar(batches, f"{self.metric} pass {repeat}", unit="batch")):
            key = protocol.eval_key(self.config, protocol.BPD_STREAM, repeat, b)
            value, _, nfe = fn(key, params, x)
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

    def run(self, params, k: int, progress: Progress) -> dict:
        """The mean over every pass of checkpoint ``k`` (missing passes computed and recorded)."""
        dataset = str(self.config.eval.get("bpd_dataset", "test")).lower()
        for r, unit in enumerate(self.units(k)):
            if unit in progress:
                continue
            values, nfe = self.bpd(params, r)
            path = os.path.join(self.eval_dir, f"{dataset}_ckpt_{k}_{self.metric}_{r}.npz")
            save_npz(path, **{self.metric: values}, nfe=nfe)
            logging.info("Checkpoint %d, pass %d: %s %.5f", k, r, self.metric, values.mean())
            result = {
                self.metric: float(values.mean()),
                "num_examples": len(values),
                "mean_nfe": float(nfe.mean()),
                "data_seed": self.data_seeds[r],
            }
            progress.record(unit, result)
        # Every pass covers the same examples: the mean of the means is the overall mean.
        return {self.metric: float(np.mean([progress[u][self.metric] for u in self.units(k)]))}
