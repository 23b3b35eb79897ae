"""Runs every benchmark and writes DIR/benchmarks.json and DIR/benchmarks.md (Markdown tables).

    python benchmarks/run_all.py --out DIR [--quick] [--only train,memory] [--batch N]

Each benchmark script runs in its own process (a fresh XLA state, as a user would run it) and
prints one JSON object, collected under its name:

* ``networks`` / ``networks_bf16_remat``: NCSN++ / DDPM++ forward and train-step time, FLOP/s
  and model FLOP utilisation (`bench_networks.py`; the second with bfloat16 + remat);
* ``train`` / ``train_bf16_remat``: `training.train_steps` throughput of the CIFAR-10
  NCSN++ / DDPM++ and the default digits configs (`bench_train.py`; the second for NCSN++ with
  bfloat16 + remat);
* ``samplers``: PC and probability-flow ODE sampler throughput, and the few-step samplers' NFE
  against energy distance to an exact-score mixture next to PC with 1000 steps
  (`bench_samplers.py`);
* ``likelihood``: probability-flow log-likelihood throughput (`bench_likelihood.py`);
* ``memory``: peak memory per config × {baseline, bf16, remat, bf16+remat, accum 2/4}
  (`bench_memory.py`).

``--quick`` runs each on its smallest case with one repeat (a smoke test, minutes on a CPU);
``--batch`` sets the CIFAR-10 batch of ``networks`` and ``train`` (default 8, sized for CPUs).
A benchmark that fails is recorded with its error and the others still run; the exit status is
then 1.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def suite(quick: bool, batch: int | None) -> dict[str, list[str]]:
    """Benchmark name -> script and arguments."""
    cifar_batch = [] if batch is None else ["--batch", str(batch)]
    train_batch = [] if batch is None else ["--cifar_batch", str(batch)]
    if quick:
        small = ["--cases", "ncsnpp_small", "--repeats", "1"]
        return {
            "networks": ["bench_networks.py", *small],
            "networks_bf16_remat": ["bench_networks.py", *small, "--dtype", "bfloat16", "--remat"],
            "train": ["bench_train.py", "--cases", "digits", "--dispatches", "1"],
            "train_bf16_remat": [
                "bench_train.py",
                *("--cases", "digits", "--dispatches", "1", "--dtype", "bfloat16", "--remat"),
            ],
            "samplers": ["bench_samplers.py", "--quick", "--sections", "throughput,accuracy"],
            "likelihood": ["bench_likelihood.py", "--batch", "64", "--train_steps", "20"],
            "memory": ["bench_memory.py", "--configs", "digits", "--variants", "baseline,remat"],
        }
    return {
        "networks": ["bench_networks.py", *cifar_batch],
        "networks_bf16_remat": [
            "bench_networks.py",
            *cifar_batch,
            "--dtype",
            "bfloat16",
            "--remat",
        ],
        "train": ["bench_train.py", *train_batch],
        "train_bf16_remat": [
            "bench_train.py",
            *train_batch,
            *("--cases", "cifar10_ncsnpp", "--dtype", "bfloat16", "--remat"),
        ],
        "samplers": ["bench_samplers.py", "--sections", "throughput,accuracy"],
        "likelihood": ["bench_likelihood.py"],
        "memory": ["bench_memory.py"],
    }


def run(script_and_args: list[str], timeout: float | None) -> dict:
    """Runs one benchmark script and returns its JSON output (or the error it died with)."""
    script, *args = script_and_args
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, os.path.join(HERE, script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "command": script_and_args}
    seconds = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        return {
            "error": f"exit status {proc.returncode}",
            "stderr_tail": proc.stderr[-3000:],
            "command": script_and_args,
            "seconds": seconds,
        }
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": "output is not JSON", "stdout_tail": proc.stdout[-3000:]}
    return {"command": script_and_args, "seconds": seconds, "result": result}


# ------------------------------------------------------------------------------------------------
# Markdown.


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value)


def _mib(num_bytes) -> str:
    return "–" if num_bytes is None else f"{num_bytes / 2**20:.1f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows
    ]
    return lines + [""]


def _networks_md(result: dict) -> list[str]:
    rows = []
    for case, r in result["results"].items():
        for part in ("forward", "train_step"):
            p = r[part]
            rows.append(
                [
                    case,
                    part,
                    r["batch_size"],
                    r["dtype"],
                    r.get("remat", False),
                    round(r[f"{part}_compile"]["wall_s"], 1),
                    round(1e3 * p["wall_s"], 2),
                    p.get("examples_per_sec"),
                    p.get("tflops_per_s"),
                    p.get("mfu"),
                    _mib(p.get("memory", {}).get("peak_bytes")),
                ]
            )
    header = ["case", "pass", "batch", "dtype", "remat", "compile s", "ms", "examples/s"]
    return _table(header + ["TFLOP/s", "MFU", "peak MiB"], rows)


def _train_md(result: dict) -> list[str]:
    rows = [
        [
            case,
            r["batch_size"],
            r.get("dtype"),
            r.get("remat"),
            r.get("grad_accum_steps"),
            r.get("compile_s", r.get("first_dispatch_s")),
            r["steps_per_sec"],
            r["examples_per_sec"],
            r.get("tflops_per_s"),
            r.get("mfu"),
            _mib(r.get("memory", {}).get("peak_bytes")),
            _mib(r.get("runtime_peak_bytes")),
        ]
        for case, r in result["cases"].items()
    ]
    header = ["config", "batch", "dtype", "remat", "accum", "compile s", "steps/s", "examples/s"]
    return _table(header + ["TFLOP/s", "MFU", "peak MiB (XLA)", "peak MiB (allocator)"], rows)


def _samplers_md(result: dict) -> list[str]:
    rows = []
    for model, samplers in result.items():
        if not isinstance(samplers, dict):
            continue
        if model == "accuracy":
            continue
        for sampler, r in samplers.items():
            rows.append(
                [
                    model,
                    sampler,
                    r["batch"],
                    r["seconds"],
                    r["samples_per_s"],
                    r["nfe_mean"],
                    r["compile_seconds"],
                ]
            )
    header = ["network", "sampler", "batch", "s", "samples/s", "NFE mean", "compile s"]
    lines = _table(header, rows)
    if "accuracy" in result:
        lines += _sampler_accuracy_md(result["accuracy"])
    return lines


def _sampler_accuracy_md(table: dict) -> list[str]:
    floor = table["exact"]["floor"]
    rows = [
        [
            sde,
            sampler,
            r["nfe"],
            r["energy"] / floor,
            r.get("path_rms"),
            r.get("as_close_as_pc_1000", "–"),
        ]
        for sde, samplers in table.items()
        if sde in ("ve", "vp", "subvp")
        for sampler, r in samplers.items()
    ]
    header = ["SDE", "sampler", "NFE", "energy / μ₀", "RMS to ODE", "≤ PC-1000 + 3 μ₀"]
    exact = table["exact"]
    return _table(header, rows) + [
        f"Energy distance of {table['points']:,} samples to the exact mixture in units of μ₀ "
        f"(the expected distance of as many exact samples); exact samples: "
        f"{exact['mean'] / floor:.2f} ± {exact['spread'] / floor:.2f}.",
        "",
    ]


def _likelihood_md(result: dict) -> list[str]:
    rows = [
        [
            case,
            result["batch"],
            r["seconds_per_batch"],
            r["examples_per_s"],
            r["nfe_mean"],
            r["compile_s"],
            r["mean_log_p"],
        ]
        for case, r in result["cases"].items()
    ]
    header = ["score / divergence", "batch", "s/batch", "examples/s", "NFE mean", "compile s"]
    lines = _table(header + ["mean log p"], rows)
    return lines + [f"Closed-form mean log p: {result['closed_form_mean_log_p']}.", ""]


def _memory_md(result: dict) -> list[str]:
    order = ["baseline", "bf16", "remat", "bf16+remat", "accum2", "accum4"]
    variants = []
    for c in result["configs"].values():
        variants += [v for v in c["variants"] if v not in variants]
    variants.sort(key=lambda v: order.index(v) if v in order else len(order))
    rows = []
    for name, c in result["configs"].items():
        row = [name, c["per_device_batch"]]
        for v in variants:
            r = c["variants"].get(v)
            if r is None:
                row.append("–")
            else:
                ratio = r.get("peak_vs_baseline")
                row.append(_mib(r["peak_bytes"]) + ("" if ratio is None else f" ({ratio:.2f}×)"))
        rows.append(row)
    lines = _table(["config", "batch/device"] + [f"{v} MiB" for v in variants], rows)
    return lines + ["Compile-time peak (XLA buffer assignment) of one train step.", ""]


FORMATTERS = {
    "networks": _networks_md,
    "networks_bf16_remat": _networks_md,
    "train": _train_md,
    "train_bf16_remat": _train_md,
    "samplers": _samplers_md,
    "likelihood": _likelihood_md,
    "memory": _memory_md,
}


def markdown(report: dict) -> str:
    """All results as Markdown: one section and table per benchmark."""
    m = report["machine"]
    lines = [
        f"# Benchmarks ({report['date']})",
        "",
        f"{m['device_count']} × {m['device_kind']} ({m['backend']}), jax {m['jax']}, "
        f"{m['cpu_count']} CPU cores, load {m['load_average_1m']}, {m['platform']}"
        + (" — quick mode (smoke test)" if report["quick"] else ""),
        "",
    ]
    for name, entry in report["benchmarks"].items():
        lines += [f"## {name}", ""]
        if "error" in entry:
            lines += [f"Failed: {entry['error']}", ""]
            continue
        lines += FORMATTERS[name](entry["result"])
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--quick", action="store_true", help="smallest cases, one repeat")
    parser.add_argument("--only", default=None, help="comma-separated subset of the benchmarks")
    parser.add_argument("--batch", type=int, default=None, help="CIFAR-10 batch (networks/train)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    args = parser.parse_args()
    benchmarks = suite(args.quick, args.batch)
    selected = list(benchmarks) if args.only is None else args.only.split(",")
    unknown = [b for b in selected if b not in benchmarks]
    if unknown:
        raise ValueError(f"Unknown benchmark(s) {unknown}; valid: {', '.join(benchmarks)}.")
    os.makedirs(args.out, exist_ok=True)

    sys.path.insert(0, os.path.dirname(HERE))
    from benchmarks import common

    report = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "machine": common.machine_info(),
        "benchmarks": {},
    }
    for name in selected:
        print(f"# {name}: {' '.join(benchmarks[name])}", file=sys.stderr, flush=True)
        report["benchmarks"][name] = run(benchmarks[name], args.timeout)
        entry = report["benchmarks"][name]
        status = entry.get("error") or f"done in {entry['seconds']} s"
        print(f"# {name}: {status}", file=sys.stderr, flush=True)
        # Written after every benchmark, so that a long run interrupted keeps what it measured.
        with open(os.path.join(args.out, "benchmarks.json"), "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(args.out, "benchmarks.md"), "w") as f:
            f.write(markdown(report))
    failed = [n for n, e in report["benchmarks"].items() if "error" in e]
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
