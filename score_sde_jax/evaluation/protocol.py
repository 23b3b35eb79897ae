"""The evaluation protocol: its seeds and keys, the bits/dim passes, and what results depend on.

All randomness derives from ``eval_seed = config.seed + 1``, the original's evaluation key
(docs/evaluation.md#randomness).
"""

import json

import jax

LOSS_STREAM, BPD_STREAM = 0, 1
# Eval keys that select what to run, not what the results are: changing them keeps the folder.
_SCHEDULING_KEYS = ("begin_ckpt", "end_ckpt", "enable_loss", "enable_bpd", "enable_sampling")


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


def settings(config, sampling: dict | None) -> dict:
    """What the stored results depend on, by group: ``config`` always, ``sampling`` (sampler,
    Inception weights, statistics) when the sampling mode runs. Compared on resume."""
    config_dict = json.loads(config.to_json_best_effort())
    for key in _SCHEDULING_KEYS:
        config_dict["eval"].pop(key, None)
    groups = {"config": config_dict}
    if sampling is not None:
        groups["sampling"] = sampling
    return json.loads(json.dumps(groups))
