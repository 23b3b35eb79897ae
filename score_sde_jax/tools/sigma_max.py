"""σ_max for a VE SDE on new data: the largest pairwise distance of the training data.

    python -m score_sde_jax.tools.sigma_max --config=configs/ve/cifar10_ncsnpp_continuous.py \\
        [--num_samples=5000] [--seed=0] [--data_dir=DIR]

Technique 1 of NCSNv2 (Song & Ermon 2020, "Improved techniques for training score-based
generative models"): choose the initial noise scale σ_max as large as the maximum Euclidean
distance between any two training points, so that the perturbed distribution at t = 1 covers the
data; the original's README gives this advice for VE on new data (docs/configs.md). Distances
are measured in the model space of the config ([0, 1] images, or [-1, 1] if ``data.centered``;
VE configs are uncentered), without flips or dequantization. On a random subsample the result is
a lower bound of the full-data maximum (it uses every example when ``num_samples`` covers them).
Console script ``score-sde-sigma-max``; exit codes: docs/commands.md.
"""

import numpy as np
from absl import flags

from score_sde_jax import commands
from score_sde_jax.data import datasets, pipeline


def max_pairwise_distance(x: np.ndarray, chunk_size: int = 1024) -> tuple[float, tuple[int, int]]:
    """max_{i<j} ‖x_i − x_j‖₂ over the rows of ``x`` [N, ...] and the pair attaining it.

    Squared distances come from blocks of the Gram matrix (‖a‖² + ‖b‖² − 2 a·b, float32); the
    winning pair's distance is then recomputed directly in float64.
    """
    x = np.asarray(x).reshape(len(x), -1)
    if len(x) < 2:
        raise ValueError(f"Need at least two points for a pairwise distance, got {len(x)}.")
    x32 = x.astype(np.float32)
    sq = np.einsum("ij,ij->i", x32, x32)
    best, pair = -np.inf, (0, 1)
    for start in range(0, len(x), chunk_size):
        block = x32[start : start + chunk_size]
        d2 = sq[start : start + chunk_size, None] + sq[None, :] - 2 * block @ x32.T
        i, j = np.unravel_index(np.argmax(d2), d2.shape)
        if d2[i, j] > best:
            best, pair = d2[i, j], (start + int(i), int(j))
    distance = float(np.linalg.norm(x[pair[0]].astype(np.float64) - x[pair[1]].astype(np.float64)))
    return distance, pair


def training_sample(config, num_samples: int, seed: int = 0, data_dir: str | None = None):
    """Up to ``num_samples`` training examples (drawn without replacement) in model space."""
    source = datasets.get_source(config, "train", data_dir)
    rng = np.random.default_rng(seed)
    n = min(num_samples, len(source))
    indices = np.sort(rng.choice(len(source), size=n, replace=False))
    examples = np.stack([source[int(i)][0] for i in indices])
    if source.is_image:
        examples = pipeline.to_model_space(examples, centered=config.data.centered)
    return examples, len(source)


def estimate_sigma_max(
    config, num_samples: int = 5000, seed: int = 0, data_dir: str | None = None
) -> dict:
    """Largest pairwise distance of a training subsample: the suggested ``model.sigma_max``.

    Returns:
      dict with ``sigma_max`` (the distance), ``num_samples`` used, ``num_examples`` in the split.
    """
    examples, num_examples = training_sample(config, num_samples, seed, data_dir)
    distance, _ = max_pairwise_distance(examples)
    return {"sigma_max": distance, "num_samples": len(examples), "num_examples": num_examples}


FLAGS = flags.FLAGS


def _define_flags():
    commands.define_config_flag(None, "Training config (name or file).")
    flags.DEFINE_integer("num_samples", 5000, "Training examples in the subsample.")
    flags.DEFINE_integer("seed", 0, "Seed of the subsample.")
    flags.DEFINE_string("data_dir", None, "tfds data directory (default config.data.data_dir).")
    flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    config = FLAGS.config
    result = estimate_sigma_max(config, FLAGS.num_samples, FLAGS.seed, FLAGS.data_dir)
    current = config.model.get("sigma_max", None) if "model" in config else None
    print(
        f"{config.data.dataset}: max pairwise distance {result['sigma_max']:.4f} over "
        f"{result['num_samples']} of {result['num_examples']} training examples"
        + (f" (config model.sigma_max = {current})" if current is not None else "")
        + "; NCSNv2 technique 1: set model.sigma_max to about this value."
    )


def main_cli():
    _define_flags()
    commands.run(main)


if __name__ == "__main__":
    main_cli()
