"""The evaluation report: every checkpoint's numbers, the last checkpoint's, and the best per metric.

The paper reports the best-FID checkpoint (docs/evaluation.md#report).
"""

REPORT_FILE = "report.json"
# Metric -> whether lower is better.
_LOWER_IS_BETTER = {"fid": True, "kid": True, "is": False, "loss": True, "bpd": True, "nll": True}


def summarize(per_ckpt: dict, last: int, seeds: dict) -> dict:
    """The report of the checkpoints ``per_ckpt`` ({k: numbers}), ``last`` the final index."""
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
