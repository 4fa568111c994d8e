"""bench/gpu_check.sh runs on a CPU too (tiny sizes with --quick): every section's path, one JSON
summary, the PASS/FAIL table, and the list of what it skipped for want of CUDA."""
import json
import os
import subprocess
from pathlib import Path

from bench import gpu_check_sections

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_the_cpu_and_says_what_it_skipped(tmp_path):
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path), "LIMIT": "600"}, timeout=600)  # (a CPU's)
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
    assert digits["prune_events"] == 12  # the CLI's prune_event path, to the end
    assert len(digits["genotype"]["normal"]) == 2  # the 1-node cell: 2 inputs
    for planned in digits["plan_vs_run"].values():  # each run planned first, then set against its plan
        assert planned["time_ratio"] > 0 and planned["memory_ratio"] > 0 and planned["planning_seconds"] > 0
    assert set(summary["plan"]) == {"search_s1_cifar10", "retrain_darts_v2_cifar10"}
    assert all(p["total_seconds"] > 0 and p["peak_MB"] > 0 for p in summary["plan"].values())
    torchrun = summary["torchrun"]
    assert torchrun["backend"] == "gloo" and torchrun["all_reduce_ok"] and torchrun["world_size"] == 1
    prune = summary["prune"]["cases"]
    assert set(prune) == {"darts", "no_restrict", "s3", "nb201", "s2", "s1r", "bf16"}
    assert all(c["status"] == "PASS" and c["events"] > 0 for c in prune.values())
    assert prune["darts"]["live_ops"] == [2, 2] and prune["no_restrict"]["live_ops"] == [8, 8]
    assert len(prune["nb201"]["live_ops"]) == 1 and prune["s1r"]["genotype"]["normal_concat"] == [2]
    (resumed,) = summary["resume"]["cases"].values()
    assert resumed["status"] == "PASS" and resumed["genotype_equal"]
    assert "stopped by SIGTERM" in resumed["stopped_with"]
    assert resumed["resumed_at"].startswith("epoch 1")  # (stopped after the first epoch's checkpoint)
    assert all(c["status"] == "SKIP" for c in summary["torchrun_2gpu"]["cases"].values())
    assert "torchrun_2gpu: NCCL across 2 processes needs 2 GPUs, this machine has 0" in summary["skipped"]
    table = done.stderr[done.stderr.index("gpu_check results"):].splitlines()[2:]  # (a title, then a header)
    rows = [line.split()[:3] for line in table]
    assert {(s, c) for s, c, _ in rows} >= {("digits", "-"), ("prune", "nb201"),
                                            ("resume", "sigterm_then_resume"), ("torchrun_2gpu", "retrain")}
    assert {status for s, _, status in rows if s != "torchrun_2gpu"} == {"PASS"}
    assert len(rows) == 6 + 7 + 1 + 2  # the sections without cases, the prune cases, resume, 2 skipped
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == summary


def test_the_two_process_torchrun_cases_run_with_gloo_on_the_cpu():
    """What the check runs on 2 GPUs, under gloo: the search with its prune events, then the retraining."""
    cases = gpu_check_sections.two_processes()
    assert [c["status"] for c in cases.values()] == ["PASS", "PASS"], cases
    search = cases["search"]
    assert search["world_size"] == 2 and search["prune_events"] >= 1 and search["evaluated_epochs"] == 3
    assert cases["retrain"]["world_size"] == 2
