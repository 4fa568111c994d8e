"""The project's GPU check: one short run that measures what only a GPU can tell and smoke-tests
the CUDA paths, then prints one JSON summary (also written to $OUT/gpu_check.json after every
section, so a run cut short keeps what it measured).

- search_iteration: one search iteration (architecture + weight step, `train_search.search_step`)
  at the default configuration (16 channels, 8 cells, batch 64), full and fully pruned supernet,
  float32 / bf16 (--amp) x contiguous / channels_last;
- s2_hessian: seconds per Hessian row, batched (forward over forward, the search's) against one
  backward per row (the authors'), and how far a bf16 Hessian is from the float32 one;
- train_step: the DARTS_V2 training step, CIFAR batch 96 and ImageNet batch 128, with and
  without AMP and channels_last (images/s);
- digits: a tiny search and retraining on the digits on this device, to the final cell, each
  planned first (`--plan`): projected seconds and peak memory against the runs' own;
- plan: the plans of a default-size search (CIFAR-10, s1) and DARTS_V2 retrain (600 epochs), and
  how long planning took;
- torchrun: a 1-process torchrun run (NCCL on CUDA, gloo on a CPU): a collective, then a tiny search;
- prune: the pruner's events on this device to the end state (`finished()`) and the genotype: the
  restricted DARTS cell, --no_restrict, S3, NAS-Bench-201, s2, s1r and bf16, each a PASS/FAIL case;
- resume: a tiny digits search stopped by SIGTERM after its first epoch, resumed with --resume; it
  passes when it finishes with the genotype of the same search run uninterrupted;
- torchrun_2gpu: with 2 GPUs, a 2-process NCCL torchrun search (prune events, evaluations) and a
  1-epoch retraining of its cell.

The timed sections run with cuDNN as the runs set it (`utils.set_determinism(False)`: benchmark on).
It ends with a PASS/FAIL table on stderr (section, case, status, seconds) before the JSON line.
On a CPU it runs too and lists in "skipped" what it left out (bf16 timings, NCCL, ImageNet at 128).

    bash bench/gpu_check.sh                # the whole check (under 8 minutes on one GPU)
    python bench/gpu_check.py --quick      # tiny sizes: the paths, not the figures
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import saliency as S  # noqa: E402
import train_search  # noqa: E402
import utils  # noqa: E402
from bench import gpu_check_sections as sections  # noqa: E402
from bench.bench_sal_source import RETRAIN  # noqa: E402
from bench.bench_search import darts_cell_mask, timed  # noqa: E402
from bench.bench_train import images_per_second  # noqa: E402
from bench.gpu_check_sections import TINY_SEARCH, TINY_TRAIN, run_script  # noqa: E402
from plumbing import distributed, rundir  # noqa: E402

DIGITS_SEARCH = ["--dataset", "digits", "--subset", "600", "--batch_size", "64", "--init_channels", "8",
                 "--layers", "3", "--steps", "3", "--epochs", "16", "--warmup", "2", "--prune_interval", "1",
                 "--no_summary"]


def search_iteration(device, quick: bool, skipped: list) -> dict:
    """Seconds of one search iteration, per supernet, precision and memory format."""
    C, layers, batch, size, steps = (4, 3, 8, 8, 2) if quick else (16, 8, 64, 32, 4)
    out = {"config": {"init_channels": C, "layers": layers, "batch": batch, "image": size, "steps": steps}}
    amps = (False, True) if device.type == "cuda" or quick else (False,)
    if len(amps) == 1:
        skipped.append("search_iteration bf16: --amp is for CUDA (a CPU's bf16 is not what it measures)")
    for pruned in (False, True):
        for amp in amps:
            for channels_last in (False, True):
                args = train_search.parse_args(
                    ["--init_channels", str(C), "--layers", str(layers), "--batch_size", str(batch),
                     "--steps", str(steps), *(["--amp"] if amp else [])])
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                torch.manual_seed(0)
                run = train_search.build(args, distributed.World(device=device), 10, fmt)
                if pruned:
                    darts_cell_mask(run.model)
                x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
                y = torch.randint(0, 10, (batch,), device=device)
                meters = [utils.AverageMeter(), utils.AverageMeter()]
                step = partial(train_search.search_step, run, x, y, x, y, 0.025, meters, "the GPU check")
                key = f"{'pruned' if pruned else 'full'}_{'bf16' if amp else 'fp32'}" \
                      f"{'_channels_last' if channels_last else ''}"
                out[key] = timed(step, 1 if quick else 5, device, warmup=not quick)
    return out


def s2_hessian(device, quick: bool, skipped: list) -> dict:
    """Hessian rows of an s2 batch (32 images): batched against the loop, and bf16 against float32."""
    C, layers, size, rows, batch, steps = (4, 3, 8, 2, 8, 2) if quick else (16, 8, 32, 16, 32, 4)
    args = train_search.parse_args(["--init_channels", str(C), "--layers", str(layers),
                                    "--steps", str(steps)])
    torch.manual_seed(0)
    model = train_search.build(args, distributed.World(device=device), 10).model
    x, y = torch.randn(batch, 3, size, size, device=device), torch.randint(0, 10, (batch,), device=device)
    betas = model.betas().detach()
    index = torch.cat([m.reshape(-1) for m in model.masks()]).nonzero().squeeze(1)[:rows]  # live entries

    def loss_fn(b, amp=False):
        with utils.autocast(device, amp):
            return F.cross_entropy(model(x, betas=b).float(), y)
    with S.explicit_batchnorm(model):
        batched = timed(lambda: S.hessian_diagonal(loss_fn, betas, index, chunk=rows), 1, device,
                        warmup=not quick)
        h32 = S.hessian_diagonal(loss_fn, betas, index, chunk=rows)
        h16 = S.hessian_diagonal(lambda b: loss_fn(b, amp=True), betas, index, chunk=rows)
    loop = timed(lambda: S.hessian_diagonal_loop(loss_fn, betas, index), 1, device, warmup=not quick)
    flat32, flat16 = h32.flatten()[index], h16.flatten()[index]
    return {"rows": rows, "batched_s_per_row": batched / rows, "loop_s_per_row": loop / rows,
            "batched_speedup": loop / batched,
            "bf16_relative_error": float((flat16 - flat32).norm() / flat32.norm().clamp_min(1e-30)),
            "bf16_within_1e-3": bool((flat16 - flat32).norm() <= 1e-3 * flat32.norm())}


def train_step(device, quick: bool, skipped: list) -> dict:
    """Images/s of the DARTS_V2 training step, with and without AMP and channels_last."""
    out = {}
    cuda = device.type == "cuda"
    if not cuda and not quick:
        skipped.append("train_step imagenet batch 128 and AMP: CUDA only "
                       "(bench/bench_train.py times the CPU)")
    for network in ("cifar", "imagenet"):
        batch = 96 if network == "cifar" else 128
        if quick:
            # The auxiliary heads need the full image sizes. At 4 channels the ImageNet network's
            # channels_last step aborts inside PyTorch 2.14 on a CPU (double free); 16 runs.
            sizes = dict(batch=2, init_channels=4 if network == "cifar" else 16, layers=3)
        elif network == "imagenet" and not cuda:
            continue
        else:
            sizes = dict(batch=batch)
        for amp in (False, True) if cuda or quick else (False,):
            for channels_last in (False, True):
                key = (f"{network}_b{sizes['batch']}_{'bf16' if amp else 'fp32'}"
                       f"{'_channels_last' if channels_last else ''}")
                out[key] = images_per_second(network, steps=1 if quick else 5, channels_last=channels_last,
                                             amp=amp, device=device, **sizes)
    return out


def planned(script: str, flags: list, folder: str) -> dict:
    """The plan of `script flags` (its --plan) and how long planning took."""
    path = Path(folder) / f"plan-{len(list(Path(folder).iterdir()))}.json"
    start = time.perf_counter()
    run_script(script, *flags, "--plan", "--plan_file", path)
    (found,) = json.loads(path.read_text())["runs"]
    return {**found, "planning_seconds": time.perf_counter() - start}


def against(plan: dict, results: dict) -> dict:
    """A plan's projected seconds and peak memory against the run's accounting (set-up left out)."""
    accounted = sum(v for k, v in results["time_seconds"].items() if k != "setup")
    return {"projected_seconds": plan["total_seconds"], "accounted_seconds": accounted,
            "time_ratio": plan["total_seconds"] / accounted, "projected_peak_MB": plan["peak_MB"],
            "measured_peak_MB": results["memory"]["max_MB"],
            "memory_ratio": plan["peak_MB"] / results["memory"]["max_MB"],
            "planning_seconds": plan["planning_seconds"]}


def digits(device, quick: bool, skipped: list) -> dict:
    """A digits search and the retraining of its cell, on this device, to the final cell; each
    planned first, and the plan set against the run."""
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as plans:
        search_flags = [*(TINY_SEARCH if quick else DIGITS_SEARCH), "--report_freq", "1000", "--out_dir", out]
        search_plan = planned("train_search.py", search_flags, plans)
        start = time.perf_counter()
        run_script("train_search.py", *search_flags)
        (search,) = Path(out).iterdir()
        found = json.loads((search / rundir.RESULTS).read_text())
        events = sections.prune_events(search)  # (train_search.prune_event's path)
        searched = time.perf_counter() - start
        train_flags = ["--base_dir", search, *(TINY_TRAIN if quick else RETRAIN)]
        train_plan = planned("train.py", train_flags, plans)
        start = time.perf_counter()
        run_script("train.py", *train_flags)
        (evaluation,) = rundir.find(search, rundir.EVAL)
        trained = json.loads((evaluation / rundir.RESULTS).read_text())
    return {"search_seconds": searched, "train_seconds": time.perf_counter() - start,
            "device": found["device"], "prune_events": events, "pruning_finished": found["pruning_finished"],
            "genotype": found["genotype"], "test_top1": trained["final_test_top1"],
            "plan_vs_run": {"search": against(search_plan, found), "retrain": against(train_plan, trained)}}


def plan(device, quick: bool, skipped: list) -> dict:
    """The plans of a default-size search and retrain (nothing is run, no data set is read)."""
    search = ["--init_channels", "4", "--layers", "3", "--batch_size", "16"] if quick else []
    retrain = [*search, "--no_auxiliary"] if quick else []
    keep = ("total_seconds", "peak_MB", "capacity_MB", "fits", "phases", "planning_seconds")
    with tempfile.TemporaryDirectory() as plans:
        return {name: {k: v for k, v in planned(script, flags, plans).items() if k in keep}
                for name, script, flags in (
                    ("search_s1_cifar10", "train_search.py", search),
                    ("retrain_darts_v2_cifar10", "train.py", ["--arch", "DARTS_V2", *retrain]))}


def torchrun(device, quick: bool, skipped: list) -> dict:
    """A 1-process torchrun run: the backend's collective, then a tiny search."""
    if device.type != "cuda":
        skipped.append("torchrun NCCL: no CUDA here, gloo instead")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_script("-m torch.distributed.run --standalone --nproc_per_node 1 bench/gpu_check.py "
                   "--torchrun_probe", out)
        probe = json.loads((Path(out) / "probe.json").read_text())
    return {**probe, "seconds": time.perf_counter() - start}


def torchrun_probe(out: str) -> None:
    """Inside torchrun: join the group (NCCL on CUDA), all-reduce, then a tiny search."""
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend)
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    ones = torch.ones(4, device=device)
    dist.all_reduce(ones)
    found = train_search.main([*TINY_SEARCH, "--epochs", "2", "--report_freq", "1000", "--out_dir", out])
    Path(out, "probe.json").write_text(json.dumps({
        "backend": backend, "world_size": dist.get_world_size(), "all_reduce_ok": bool((ones == 1).all()),
        "search_device": found["device"], "search_world_size": found["world_size"]}))
    if dist.is_initialized():
        dist.destroy_process_group()


SECTIONS = {"search_iteration": search_iteration, "s2_hessian": s2_hessian, "train_step": train_step,
            "digits": digits, "plan": plan, "torchrun": torchrun, "prune": sections.prune,
            "resume": sections.resume, "torchrun_2gpu": sections.torchrun_2gpu}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes: checks the paths in seconds, not the figures")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma-separated sections to run (default: all of those above)")
    p.add_argument("--torchrun_probe", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torchrun_probe:
        return torchrun_probe(args.torchrun_probe)
    chosen = [s for s in args.sections.split(",") if s]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        p.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    device = distributed.init().device
    summary = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "cuda": torch.version.cuda, "quick": args.quick, "skipped": [],
               "errors": {}, "section_seconds": {}}
    out = os.environ.get("OUT")
    utils.set_determinism(False)  # as the runs set cuDNN (benchmark on) without --deterministic
    started = time.perf_counter()
    for name in chosen:
        t = time.perf_counter()
        try:
            summary[name] = SECTIONS[name](device, args.quick, summary["skipped"])
            failed = sections.failures(summary[name])  # (a section of cases: each said PASS or FAIL)
            if failed:
                summary["errors"][name] = failed
        except Exception as e:  # one broken section must not hide the others' figures
            summary["errors"][name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        summary["section_seconds"][name] = time.perf_counter() - t
        print(f"gpu_check: {name} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        summary["seconds"] = time.perf_counter() - started
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            Path(out, "gpu_check.json").write_text(json.dumps(summary, indent=1))
    print(sections.table(summary, chosen, summary["section_seconds"]), file=sys.stderr, flush=True)
    print(json.dumps(summary))
    sys.exit(1 if summary["errors"] else 0)


if __name__ == "__main__":
    main()
