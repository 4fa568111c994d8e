"""The GPU check's sections of PASS/FAIL cases (prune, resume, 2-process torchrun) and its table."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch

import train_search
from plumbing import distributed, rundir, stops

ROOT = Path(__file__).resolve().parents[1]

# 1-node cells (14 -> 2 ops per cell: 12 events), an event every step, 2 steps per epoch. Contiguous
# as on CUDA: on a CPU, channels_last with these cells corrupts the heap in PyTorch 2.14.
TINY_SEARCH = ["--dataset", "digits", "--subset", "64", "--batch_size", "16", "--init_channels", "4",
               "--layers", "3", "--steps", "1", "--epochs", "8", "--warmup", "1", "--prune_interval", "1",
               "--no_summary", "--no_channels_last"]
TINY_TRAIN = ["--dataset", "digits", "--no_auxiliary", "--no_cutout", "--epochs", "1", "--batch_size", "64",
              "--init_channels", "4", "--layers", "2", "--report_freq", "1000"]
# The pruner alone, on device batches of 8 images of 8x8: a supernet of 1-node cells (3 cells;
# NAS-Bench-201: 1 per stage), s2's Hessian rows in one chunk, s1r's candidates on one batch.
PRUNE_SIZES = ["--init_channels", "4", "--layers", "3", "--batch_size", "8", "--hessian_chunk", "32",
               "--iter_compare", "0"]
ONE_NODE = ["--steps", "1"]
PRUNE_CASES = {"darts": ONE_NODE, "no_restrict": [*ONE_NODE, "--no_restrict"],
               "s3": [*ONE_NODE, "--search_space", "s3"],
               "nb201": ["--search_space", "nb201", "--layers", "1"],
               "s2": [*ONE_NODE, "--sal_second"], "s1r": [*ONE_NODE, "--num_compare", "2"],
               "bf16": [*ONE_NODE, "--amp"]}
TORCHRUN_2 = "-m torch.distributed.run --standalone --nproc_per_node 2"


def run_script(script: str, *args, env=None) -> None:
    """Run one of the project's scripts; a failure raises with its last line of output."""
    done = subprocess.run([sys.executable, *script.split(), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"{script} exited {done.returncode}: {lines[-1] if lines else ''}")


def check(ok: bool, message: str) -> None:
    """Fail the case with `message` unless `ok` (an AssertionError, which `python -O` keeps)."""
    if not ok:
        raise AssertionError(message)


def case(cases: dict, name: str, run: Callable[[], dict]) -> None:
    """Run a case into `cases[name]`: PASS and its figures, or FAIL and the error (traceback to stderr)."""
    start = time.perf_counter()
    try:
        cases[name] = {"status": "PASS", **run()}
    except Exception as e:  # one failing case must not hide the others
        traceback.print_exc()
        cases[name] = {"status": "FAIL", "error": f"{type(e).__name__}: {e}"}
    cases[name]["seconds"] = time.perf_counter() - start


def failures(result) -> str | None:
    """The failed cases of a section's result, in one line; None when none failed."""
    cases = result.get("cases", {}) if isinstance(result, dict) else {}
    failed = [f"{name}: {r['error']}" for name, r in cases.items() if r["status"] == "FAIL"]
    return "; ".join(failed) or None


def prune_events(run: Path) -> int:
    """The prune events a search recorded (its prune_events.jsonl holds a line per pruned op)."""
    rows = [json.loads(line) for line in (run / rundir.PRUNE_EVENTS).read_text().splitlines()]
    return len({(row["epoch"], row["step"]) for row in rows})


def prune_to_the_end(device: torch.device, flags: list) -> dict:
    """Prune the search's supernet on device batches until `finished()`, checking each event; the genotype."""
    args = train_search.parse_args([*PRUNE_SIZES, *flags])
    torch.manual_seed(0)
    parts = train_search.build(args, distributed.World(device=device), 10)
    pruner, model = parts.pruner, parts.model

    def batches(n: int) -> list:
        return [(torch.randn(8, 3, 8, 8, device=device), torch.randint(0, 10, (8,), device=device))
                for _ in range(n)]

    announced, events = pruner.events_left(), 0
    while not pruner.finished():
        check(events < announced, f"not finished after the {announced} events events_left() announced")
        live = sum(pruner.live_ops())
        saliency = pruner.saliency(batches(1))
        alive = torch.stack(list(model.masks()))
        check(saliency.device.type == device.type, f"saliency on {saliency.device}, not on {device}")
        check(bool(saliency[alive].isfinite().all()), "non-finite saliency of a live op")
        decisions = pruner.decide(saliency, lambda: batches(args.iter_compare + 1))
        pruner.apply(decisions)
        events += 1
        now = sum(pruner.live_ops())
        check(bool(decisions) and now == live - len(decisions),
              f"event {events}: {len(decisions)} decisions took live ops from {live} to {now}")
    final = model.space.final_ops(not args.no_restrict, args.num_kept_min)
    check(pruner.live_ops() == [final] * len(pruner.live_ops()),
          f"finished at {pruner.live_ops()} live ops, not {final}")
    genotype = model.genotype(not args.no_restrict, args.num_kept_max)
    return {"events": events, "live_ops": pruner.live_ops(), "genotype": model.space.format.to_dict(genotype)}


def prune(device, quick: bool, skipped: list) -> dict:
    """The pruner's events to the end state on this device, per search space and saliency."""
    cases = {}
    for name, flags in PRUNE_CASES.items():
        case(cases, name, partial(prune_to_the_end, device, flags))
    return {"config": PRUNE_SIZES, "cases": cases}


def checkpointed(out: Path) -> bool:
    """Whether the run under `out` has written a checkpoint."""
    return bool(list(out.glob(f"*/{rundir.CHECKPOINT}")))


@contextmanager
def ended(proc: subprocess.Popen) -> Iterator[None]:
    """Within: `proc` may run; after, it has ended (killed if it still ran: a case failed)."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stopped_at_first_checkpoint(flags: list, out: Path) -> tuple[Path, str]:
    """Start a search, SIGTERM it once it wrote its first checkpoint; its run directory and last line."""
    out.mkdir()
    with open(out / "stderr.txt", "w") as said:
        proc = subprocess.Popen([sys.executable, "train_search.py", *flags, "--out_dir", out], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=said)
        with ended(proc):
            deadline = time.perf_counter() + 300
            while proc.poll() is None and time.perf_counter() < deadline and not checkpointed(out):
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(300)
    lines = (out / "stderr.txt").read_text().strip().splitlines() or [""]
    check(code == stops.TERMINATED_EXIT_CODE, f"the search was to stop on SIGTERM with exit code "
          f"{stops.TERMINATED_EXIT_CODE}, it exited {code}: {lines[-1]}")
    (cut,) = rundir.find(out, rundir.SEARCH)
    return cut, lines[-1]


def stopped_and_resumed(flags: list, out: Path) -> dict:
    """Stop a search after its first epoch, resume it, and compare it with the same search unstopped."""
    search = [sys.executable, "train_search.py", *flags, "--out_dir", out / "whole"]
    whole = subprocess.Popen(search, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with ended(whole):
        cut, stop_line = stopped_at_first_checkpoint(flags, out / "cut")
        run_script("train_search.py", *flags, "--resume", cut)
        check(whole.wait(300) == 0, f"the uninterrupted search exited {whole.returncode}")
    (ref,) = rundir.find(out / "whole", rundir.SEARCH)
    resumed = [line for line in (cut / rundir.LOG).read_text().splitlines() if "resuming" in line]
    check(bool(resumed), "the second run did not resume (no 'resuming' line in its log)")
    genotypes = [(run / rundir.FINAL_ARCH).read_text().strip() for run in (cut, ref)]
    check(genotypes[0] == genotypes[1], "the resumed search's genotype differs from the uninterrupted "
          f"one's: {genotypes[0]} against {genotypes[1]}")
    events = [(run / rundir.PRUNE_EVENTS).read_text() for run in (cut, ref)]
    return {"stopped_with": stop_line, "resumed_at": resumed[0].split(" at ")[-1], "genotype_equal": True,
            "prune_events_equal": events[0] == events[1]}


def resume(device, quick: bool, skipped: list) -> dict:
    """A tiny digits search stopped by SIGTERM after its first epoch, resumed, against one unstopped."""
    # 4 epochs: the resumed run prunes 6 of the 12 ops. --deterministic on CUDA, so that the two
    # may be compared; a CPU's runs are bit-identical without it, and its imports cost seconds.
    deterministic = ["--deterministic"] if device.type == "cuda" else []
    flags = [*TINY_SEARCH, "--epochs", "4", "--seed", "1", "--report_freq", "1000", *deterministic]
    cases = {}
    with tempfile.TemporaryDirectory() as out:
        case(cases, "sigterm_then_resume", partial(stopped_and_resumed, flags, Path(out)))
    return {"checks": "the resumed search finishes, with the uninterrupted one's genotype", "cases": cases}


def search_on_two(out: str, found: dict) -> dict:
    """A tiny digits search under a 2-process torchrun: prune events and an evaluation every epoch."""
    run_script(f"{TORCHRUN_2} train_search.py", *TINY_SEARCH, "--epochs", "3", "--report_freq", "1000",
               "--out_dir", out)
    (run,) = rundir.find(out, rundir.SEARCH)
    results = json.loads((run / rundir.RESULTS).read_text())
    events = prune_events(run)
    epochs = rundir.results_csv(run).read_text().strip().count("\n")  # (a header, then a row per epoch)
    check(results["world_size"] == 2, f"the search ran on {results['world_size']} processes, not 2")
    check(events >= 1 and epochs == 3, f"{events} prune events and {epochs} evaluated epochs")
    found["search"] = run
    return {"world_size": results["world_size"], "prune_events": events, "evaluated_epochs": epochs,
            "device": results["device"], "final_valid_top1": results["final_valid_top1"]}


def retrain_on_two(found: dict) -> dict:
    """A 1-epoch retraining of the searched cell under a 2-process torchrun."""
    check("search" in found, "no search to retrain (the search case failed)")
    run_script(f"{TORCHRUN_2} train.py", "--base_dir", found["search"], *TINY_TRAIN)
    (evaluation,) = rundir.find(found["search"], rundir.EVAL)
    trained = json.loads((evaluation / rundir.RESULTS).read_text())
    check(trained["world_size"] == 2, f"the retraining ran on {trained['world_size']} processes, not 2")
    return {"world_size": trained["world_size"], "test_top1": trained["final_test_top1"]}


def two_processes() -> dict:
    """The search and retraining cases under a 2-process torchrun (NCCL on CUDA, gloo on a CPU)."""
    cases, found = {}, {}
    with tempfile.TemporaryDirectory() as out:
        case(cases, "search", partial(search_on_two, out, found))
        case(cases, "retrain", partial(retrain_on_two, found))
    return cases


def torchrun_2gpu(device, quick: bool, skipped: list) -> dict:
    """Two processes on two GPUs under torchrun (NCCL): a search with prune events, then a retraining."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2:
        reason = f"torchrun_2gpu: NCCL across 2 processes needs 2 GPUs, this machine has {gpus}"
        skipped.append(reason)
        return {"cases": {"search": {"status": "SKIP", "reason": reason, "seconds": 0.0},
                          "retrain": {"status": "SKIP", "reason": reason, "seconds": 0.0}}}
    return {"cases": two_processes()}


def table(summary: dict, sections: list, seconds: dict) -> str:
    """One row per case (per section where it has none): section, case, PASS/FAIL/SKIP, seconds, why."""
    rows = []
    for name in sections:
        cases = summary.get(name, {}).get("cases") if isinstance(summary.get(name), dict) else None
        if cases:
            rows += [(name, c, r["status"], r["seconds"], r.get("error") or r.get("reason") or "")
                     for c, r in cases.items()]
        else:
            error = summary["errors"].get(name)
            rows.append((name, "-", "FAIL" if error else "PASS", seconds.get(name, 0.0), error or ""))
    lines = ["gpu_check results:", f"{'section':<18}{'case':<20}{'status':<8}{'seconds':>8}  why"]
    lines += [f"{s:<18}{c:<20}{st:<8}{t:>8.1f}  {why[:100]}" for s, c, st, t, why in rows]
    return "\n".join(lines)
