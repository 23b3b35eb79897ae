"""The profile summary of `benchmarks/profile_train_step.py` on a made-up two-step GPU trace, and
the steps per timed call of `benchmarks/compare_pytorch.py`."""

import pytest

from benchmarks import compare_pytorch
from benchmarks import profile_train_step as profile


def _trace():
    meta = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
        {"ph": "M", "pid": 7, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "pid": 7, "tid": 3, "name": "thread_name", "args": {"name": "Stream #14"}},
        {"ph": "M", "pid": 7, "tid": 9, "name": "thread_name", "args": {"name": "XLA Ops"}},
        {"ph": "M", "pid": 1, "tid": 5, "name": "thread_name", "args": {"name": "Stream #1"}},
    ]
    kernels = [
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16", 600.0),
        ("input_reduce_fusion_2", 100.0),
        ("loop_multiply_fusion", 50.0),
        ("nchwToNhwcKernel", 30.0),
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16", 400.0),
        ("void cub::DeviceSegmentedRadixSort", 20.0),
    ]
    events = [
        {"ph": "X", "pid": 7, "tid": 3, "name": name, "dur": dur} for name, dur in kernels * 2
    ]
    events.append({"ph": "X", "pid": 7, "tid": 9, "name": "fusion.3", "dur": 1e6})  # op line
    events.append({"ph": "X", "pid": 1, "tid": 5, "name": "host_stream", "dur": 1e6})  # host
    return {"traceEvents": meta + events}


def test_summary_counts_stream_kernels_per_step_by_kind():
    summary = profile.summarize(_trace(), steps=2, top=2)
    assert summary["busy_ms_per_step"] == pytest.approx(1.2)
    assert summary["kernels_per_step"] == 6
    assert summary["ms_per_step_by_kind"] == {
        "conv_matmul": 1.0,
        "reduction": 0.1,
        "fusion": 0.05,
        "copy_transpose": 0.03,
        "other": 0.02,
    }
    first = summary["top_kernels"][0]
    assert first["name"].startswith("sm90_xmma") and first["calls_per_step"] == 2
    assert first["ms_per_step"] == 1.0
    assert [k["kind"] for k in summary["top_kernels"]] == ["conv_matmul", "reduction"]


@pytest.mark.parametrize(
    "task, steps",
    [("forward", 3), ("train", 3), ("train_bf16", 3), ("pc", 1), ("ode_tsit5", 1), ("bpd", 1)],
)
def test_forwards_and_train_steps_run_several_per_timed_call(task, steps):
    """Network calls repeat ``--steps-per-call`` times in a timed call; a sampler, ODE solve or
    bits/dim is one whole run whatever the option says."""
    assert compare_pytorch._steps(task, 3) == steps
    assert compare_pytorch._parse_args(["--steps-per-call", "3"]).steps_per_call == 3
    assert compare_pytorch._parse_args([]).steps_per_call == 1  # CPU: one step, as measured so far
    assert compare_pytorch._parse_args(["--device", "gpu"]).steps_per_call == 10
