"""``eval.enable_loss``: the training objective of the EMA parameters on the held-out split.

Every held-out example once, in dataset order, without dropout; batch b uses the key
``eval_key(config, LOSS_STREAM, b)``. Checkpoint k -> ``ckpt_<k>_loss.npz`` (``all_losses``,
``mean_loss``); the reported loss is the mean over every example.
"""

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import distributed, models, sde_lib, training
from score_sde_jax.evaluation import data_passes, protocol
from score_sde_jax.evaluation.progress import Progress, save_npz
from score_sde_jax.progress import bar


class HeldOutLoss:
    """The eval-loss mode: `units` of a checkpoint and `run`, which computes the missing ones."""

    def __init__(self, config, mesh, eval_dir: str):
        self.config, self.eval_dir = config, eval_dir
        self.split = NamedSharding(mesh, P("data"))
        replicated = NamedSharding(mesh, P())
        loss_fn = training.create_loss_fn(
            config, sde_lib.get_sde(config), models.get_model(config), train=False, per_example=True
        )
        self._loss_fn = jax.jit(
            loss_fn, in_shardings=(replicated, replicated, self.split), out_shardings=self.split
        )

    def units(self, k: int) -> list[str]:
        return [f"ckpt_{k}/loss"]

    def losses(self, params) -> np.ndarray:
        """Per-example eval losses over the whole held-out split, in dataset order."""
        seed = protocol.eval_seed(self.config)
        values = []
        batches = data_passes.ordered_batches(self.config, "eval", seed, self.split)
        for b, (x, mask) in enumerate(bar(batches, "eval loss", unit="batch")):
            key = protocol.eval_key(self.config, protocol.LOSS_STREAM, b)
            values.append(distributed.to_host(self._loss_fn(params, key, x))[mask])
        return np.concatenate(values)

    def run(self, params, k: int, progress: Progress) -> dict:
        """The eval loss of checkpoint ``k`` (computed and recorded unless already recorded)."""
        (unit,) = self.units(k)
        if unit not in progress:
            all_losses = self.losses(params)
            mean_loss = float(all_losses.mean())
            path = os.path.join(self.eval_dir, f"ckpt_{k}_loss.npz")
            save_npz(path, all_losses=all_losses, mean_loss=mean_loss)
            logging.info("Checkpoint %d: eval loss %.6g", k, mean_loss)
            progress.record(unit, {"loss": mean_loss, "num_examples": len(all_losses)})
        return {"loss": progress[unit]["loss"]}
