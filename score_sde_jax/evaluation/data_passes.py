"""Single ordered passes over a data split for the loss and bits/dim modes, sharded over the mesh.

Every example is seen once, in dataset order; the last batch is padded and masked, not dropped.
"""

import jax
import numpy as np

from score_sde_jax import distributed
from score_sde_jax.data import pipeline


def check_batch_size(config, mesh) -> None:
    """Raises ValueError unless ``eval.batch_size`` splits over the devices and processes."""
    batch_size, num_devices = int(config.eval.batch_size), mesh.devices.size
    if batch_size % num_devices or batch_size % jax.process_count():
        raise ValueError(
            f"eval.batch_size={batch_size} must be divisible by the number of devices "
            f"({num_devices}) and processes ({jax.process_count()})."
        )


def ordered_batches(config, split: str, seed: int, sharding):
    """Yields ``(x, mask)`` for every batch of one pass over ``split`` ('train' or 'eval').

    ``x`` is the global float32 batch sharded by ``sharding``; ``mask`` the host bool [B] of its
    real examples (every process's). ``seed`` sets the pipeline's dequantization noise.
    """
    train_iter, eval_iter = pipeline.create_datasets(
        config,
        seed=seed,
        data_dir=config.data.get("data_dir", None),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        evaluation=True,
    )
    for batch in eval_iter if split == "eval" else train_iter:
        x = jax.make_array_from_process_local_data(sharding, np.asarray(batch["image"], np.float32))
        yield x, distributed.to_host(batch["mask"])
