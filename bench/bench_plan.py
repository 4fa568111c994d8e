"""`--plan` against the run it plans: the projected seconds (per phase and in all) against the run's
own accounting (results.json `time_seconds`, set-up left out: the plan does not project it), the
projected peak memory against the run's measured peak (`memory.max_MB`), and how long planning
took against the run. Three reduced searches (s1, s1r, s2 on the digits) and a retrain, each
planned and then run, one after the other, on this machine.

    python bench/bench_plan.py                      # all four (about 15 minutes on a 2-core CPU)
    python bench/bench_plan.py --runs s1,retrain --json plan_vs_run.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ["--dataset", "digits", "--subset", "256", "--batch_size", "32", "--init_channels", "8", "--layers", "3",
          "--epochs", "10", "--warmup", "2", "--report_freq", "1000", "--no_summary", "--seed", "0"]
RUNS = {  # name: script, flags (4 steps per epoch, two events per epoch after the warm-up)
    "s1": ("train_search.py", SEARCH),
    "s1r": ("train_search.py", [*SEARCH, "--num_compare", "5"]),
    "s2": ("train_search.py", [*SEARCH, "--sal_second", "--epochs", "4"]),
    "retrain": ("train.py", ["--arch", "DARTS_V2", "--dataset", "digits", "--epochs", "5", "--batch_size", "64",
                             "--init_channels", "16", "--layers", "8", "--no_auxiliary", "--seed", "0"]),
}


def timed_run(script: str, argv: list[str]) -> float:
    """Wall seconds of `python script argv` (its output to /dev/null; a failure stops the benchmark)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, script, *argv], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def compare(name: str, out: Path) -> dict:
    """Plan `name`, then run it; the figures of both."""
    script, flags = RUNS[name]
    plan_file = out / f"plan-{name}.json"
    planning = timed_run(script, [*flags, "--plan", "--plan_file", str(plan_file)])
    wall = timed_run(script, [*flags, "--out_dir", str(out / name)])
    (results_file,) = (out / name).glob("*/results.json")
    results = json.loads(results_file.read_text())
    (plan,) = json.loads(plan_file.read_text())["runs"]
    projected = {k: v["seconds"] for k, v in plan["phases"].items()}
    accounted = {k: v for k, v in results["time_seconds"].items() if k != "setup"}
    return {"projected": projected, "accounted": accounted, "setup": results["time_seconds"].get("setup", 0.0),
            "time_ratio": sum(projected.values()) / sum(accounted.values()),
            "peak_projected_MB": plan["peak_MB"], "peak_measured_MB": results["memory"]["max_MB"],
            "memory_ratio": plan["peak_MB"] / results["memory"]["max_MB"], "memory_kind": plan["memory_kind"],
            "planning_seconds": planning, "run_seconds": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    p.add_argument("--json", help="also write every figure to this JSON file")
    args = p.parse_args()
    names = [n for n in args.runs.split(",") if n]
    for name in names:
        if name not in RUNS:
            p.error(f"--runs: unknown run {name!r}; choose from {', '.join(RUNS)}")
    report = {}
    print(f"{'run':8s} {'projected s':>11s} {'accounted s':>11s} {'ratio':>6s} {'peak plan MB':>12s} "
          f"{'peak run MB':>11s} {'ratio':>6s} {'planning s':>10s} {'run s':>7s} {'plan/run':>8s}", flush=True)
    with tempfile.TemporaryDirectory() as temporary:
        for name in names:
            r = report[name] = compare(name, Path(temporary))
            print(f"{name:8s} {sum(r['projected'].values()):11.1f} {sum(r['accounted'].values()):11.1f} "
                  f"{r['time_ratio']:6.2f} {r['peak_projected_MB']:12.0f} {r['peak_measured_MB']:11.0f} "
                  f"{r['memory_ratio']:6.2f} {r['planning_seconds']:10.1f} {r['run_seconds']:7.1f} "
                  f"{r['planning_seconds'] / r['run_seconds']:8.2f}", flush=True)
            print("         per phase (projected / accounted s): " + ", ".join(
                f"{k} {r['projected'].get(k, 0.0):.1f}/{r['accounted'].get(k, 0.0):.1f}"
                for k in dict.fromkeys([*r["projected"], *r["accounted"]])), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
