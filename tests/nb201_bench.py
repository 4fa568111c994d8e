"""Small NAS-Bench-201 / NATS-Bench benchmark files in the packages' own formats, built with the
packages' own classes, with made-up accuracies that tell every data set and evaluation set apart."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# (data set, evaluation set) -> offset added to an architecture's base accuracy; the real files
# hold these evaluation sets per data set.
OFFSETS = {
    ("cifar10-valid", "x-valid"): 1.0, ("cifar10-valid", "ori-test"): 2.0,
    ("cifar10", "ori-test"): 3.0,
    ("cifar100", "x-valid"): 4.0, ("cifar100", "x-test"): 5.0, ("cifar100", "ori-test"): 6.0,
    ("ImageNet16-120", "x-valid"): 7.0, ("ImageNet16-120", "x-test"): 8.0, ("ImageNet16-120", "ori-test"): 9.0,
}
SEEDS = (777, 888)  # seed 888 scores 1 more: the benchmark's mean over seeds adds 0.5
LESS = -50.0  # the 12-epoch results ("less"), which a look-up must not read


def expected(base: float) -> dict[str, float]:
    """What `nasbench201.Benchmark.lookup` must return for an architecture of accuracy `base`."""
    pick = {"cifar10_valid": ("cifar10-valid", "x-valid"), "cifar10_test": ("cifar10", "ori-test"),
            "cifar100_valid": ("cifar100", "x-valid"), "cifar100_test": ("cifar100", "x-test"),
            "imagenet16_valid": ("ImageNet16-120", "x-valid"), "imagenet16_test": ("ImageNet16-120", "x-test")}
    return {key: base + OFFSETS[where] + 0.5 for key, where in pick.items()}


def _arch_results(api, index: int, arch: str, base: float, epochs: int, numpy_scalars: bool):
    results = api.ArchResults(index, arch)
    for dataset in ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120"):
        for seed in SEEDS:
            acc = base + (seed == 888)
            params = np.float64(0.5) if numpy_scalars else 0.5
            count = api.ResultsCount(dataset, None, {e: acc for e in range(epochs)}, {e: 1.0 for e in range(epochs)},
                                     params, 10.0, {"arch_str": arch, "channel": 16, "num_cells": 5,
                                                    "class_num": 10}, seed, epochs, None)
            sets = [name for (d, name) in OFFSETS if d == dataset]
            accs = {f"{name}@{e}": acc + OFFSETS[dataset, name] for name in sets for e in range(epochs)}
            count.update_eval(accs, {k: 0.5 for k in accs}, {k: 1.0 for k in accs})
            results.update(dataset, seed, count)
    return results.state_dict()


def make_benchmark(path: Path, archs: dict[str, float], kind: str = "nas201", numpy_scalars: bool = False) -> Path:
    """Write a benchmark holding `archs` ({architecture string: base accuracy}) and return its
    path: kind "nas201" (a NAS-Bench-201 .pth), "nats" (a NATS-tss .pickle.pbz2 file) or
    "nats_dir" (NATS-Bench's unpacked folder, read in fast mode)."""
    import nas_201_api
    import nats_bench

    api = nas_201_api if kind == "nas201" else nats_bench
    meta = list(archs)
    infos = {i: {"12": _arch_results(api, i, a, b + LESS, 2, numpy_scalars),
                 "200": _arch_results(api, i, a, b, 3, numpy_scalars)} for i, (a, b) in enumerate(archs.items())}
    if kind == "nas201":
        data = {"meta_archs": meta, "evaluated_indexes": list(infos),
                "arch2infos": {i: {"less": v["12"], "full": v["200"]} for i, v in infos.items()}}
        torch.save(data, path)
        return path
    if kind == "nats":
        nats_bench.pickle_save({"meta_archs": meta, "arch2infos": infos, "evaluated_indexes": list(infos)}, str(path))
        return Path(f"{path}.pbz2")
    path.mkdir(parents=True)
    nats_bench.pickle_save({"meta_archs": meta}, str(path / "meta.pickle"))
    for i, info in infos.items():
        nats_bench.pickle_save(info, str(path / f"{i:06d}.pickle"))
    return path
