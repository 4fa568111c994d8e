"""bench/gpu_check.sh runs on a CPU too (tiny sizes with --quick): every section's path, one JSON
summary, and the list of what it skipped for want of CUDA."""
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_the_cpu_and_says_what_it_skipped(tmp_path):
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["errors"] == {} and summary["device"] == "cpu"
    assert any("NCCL" in line for line in summary["skipped"])
    iteration = summary["search_iteration"]
    assert {"full_fp32", "pruned_bf16_channels_last"} <= set(iteration)
    assert all(v > 0 for k, v in iteration.items() if k != "config")
    hessian = summary["s2_hessian"]
    assert hessian["rows"] == 2 and hessian["batched_s_per_row"] > 0 and hessian["bf16_relative_error"] >= 0
    assert len(summary["train_step"]) == 8  # 2 networks x fp32/bf16 x contiguous/channels_last
    digits = summary["digits"]
    assert digits["device"] == "cpu" and digits["pruning_finished"] and 0 <= digits["test_top1"] <= 100
    assert len(digits["genotype"]["normal"]) == 2  # the 1-node cell: 2 inputs
    for planned in digits["plan_vs_run"].values():  # each run planned first, then set against its plan
        assert planned["time_ratio"] > 0 and planned["memory_ratio"] > 0 and planned["planning_seconds"] > 0
    assert set(summary["plan"]) == {"search_s1_cifar10", "retrain_darts_v2_cifar10"}
    assert all(p["total_seconds"] > 0 and p["peak_MB"] > 0 for p in summary["plan"].values())
    torchrun = summary["torchrun"]
    assert torchrun["backend"] == "gloo" and torchrun["all_reduce_ok"] and torchrun["world_size"] == 1
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == summary
