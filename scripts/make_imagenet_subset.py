"""Build a small, deterministic per-class subset of an ImageNet-style folder for the search.

PC-DARTS searches on ImageNet itself, on 10% of each class for the network weights and 2.5% for
the architecture. This script samples `--fraction` of every class of `SRC/train` (12.5% covers
both) and, by default, all of `SRC/val`, into a new ImageFolder root `DST/{train,val}/<class>/`
of symlinks, hard links or copies, documented in `DST/subset.json`. `train_search.py --dataset
folder --data DST --train_portion 0.8` then splits `DST/train` into the two parts. The choice
depends only on the file names, `--seed` and the class name, so every run and machine agrees.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plumbing.cli import ArgumentParser, UserError, run_cli  # noqa: E402
from plumbing.fileio import write_json  # noqa: E402

log = logging.getLogger("make_imagenet_subset")

# The extensions torchvision's ImageFolder accepts, compared case-insensitively as it does.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LINKERS = {"symlink": os.symlink, "hardlink": os.link, "copy": shutil.copy2}
SPLITS = ("train", "val")


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True,
                   help="ImageNet-style root holding train/ and val/, one sub-folder per class")
    p.add_argument("--dst", required=True,
                   help="the subset's root, written as DST/train/, DST/val/ and DST/subset.json")
    p.add_argument("--fraction", type=float, required=True,
                   help="share of each class of SRC/train to keep, in (0, 1]; PC-DARTS: 0.125")
    p.add_argument("--val_fraction", type=float, default=1.0,
                   help="share of each class of SRC/val to keep, in (0, 1]; default 1.0: all of it")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the per-class shuffle, mixed with the class name (default 0)")
    p.add_argument("--mode", choices=tuple(LINKERS), default="symlink",
                   help="symlinks (default, absolute targets), hard links or copies of the images")
    p.add_argument("--force", action="store_true",
                   help="replace DST's train/, val/ and subset.json when DST is not empty")
    return p


def list_images(folder: Path) -> list[str]:
    """The sorted names of the image files directly inside `folder`."""
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def pick(names: list[str], fraction: float, seed: int, class_name: str) -> list[str]:
    """The first max(1, round(fraction * n)) of `names` after a shuffle seeded by (seed, class), sorted."""
    order = sorted(names)
    # A string seed goes through SHA-512, so unlike hash() it is the same in every process.
    random.Random(f"{seed}:{class_name}").shuffle(order)
    return sorted(order[:max(1, round(fraction * len(order)))])


def select(src: Path, split: str, fraction: float, seed: int) -> dict[str, tuple[int, list[str]]]:
    """{class: (images in the class, chosen names)} for every class folder of `src/split`."""
    classes = sorted(e.name for e in os.scandir(src / split) if e.is_dir())
    if not classes:
        raise UserError(f"no class folders in '{src / split}'")
    chosen = {}
    for name in classes:
        images = list_images(src / split / name)
        if not images:
            raise UserError(f"no images ({' '.join(IMAGE_EXTENSIONS)}) in '{src / split / name}'")
        chosen[name] = (len(images), pick(images, fraction, seed, name))
    return chosen


def check_args(args: argparse.Namespace, src: Path, dst: Path) -> None:
    """Refuse a bad fraction, a source without train/ and val/, and a DST that would lose data."""
    for flag in ("fraction", "val_fraction"):
        if not 0 < getattr(args, flag) <= 1:
            raise UserError(f"--{flag} must be in (0, 1], got {getattr(args, flag)}")
    for folder in (src, src / "train", src / "val"):
        if not folder.is_dir():
            raise UserError(f"no folder '{folder}': --src must hold train/ and val/ "
                              "with one sub-folder per class")
    # --force deletes DST/train and DST/val: never let them hold the source, or DST sit in it.
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_src == real_dst or any(real_src.is_relative_to(real_dst / s)
                                   or real_dst.is_relative_to(real_src / s) for s in SPLITS):
        raise UserError(f"--dst '{dst}' overlaps --src '{src}'")
    if dst.exists() and not dst.is_dir():
        raise UserError(f"--dst '{dst}' exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not args.force:
        raise UserError(f"--dst '{dst}' exists and is not empty; pass --force to replace its subset")


def main(argv: list[str] | None = None) -> dict:
    """Write the subset; return {dst, classes, train, val, command}."""
    args = build_parser().parse_args(argv)
    src, dst = Path(os.path.abspath(args.src)), Path(os.path.abspath(args.dst))
    check_args(args, src, dst)
    fractions = {"train": args.fraction, "val": args.val_fraction}
    chosen = {split: select(src, split, fractions[split], args.seed) for split in SPLITS}
    if chosen["val"].keys() != chosen["train"].keys():
        raise UserError(f"the class folders of '{src / 'val'}' differ from those of '{src / 'train'}'")
    try:
        write_subset(args, src, dst, chosen)
    except OSError as e:
        raise UserError(f"cannot write the subset to '{dst}': {e}") from None
    summary = {"dst": str(dst), "classes": len(chosen["train"]),
               **{s: sum(len(f) for _, f in chosen[s].values()) for s in SPLITS},
               "command": f"python train_search.py --dataset folder --data {dst} --train_portion 0.8"}
    log.info("%d classes: %d train and %d val images (%s of '%s') written to '%s'",
             summary["classes"], summary["train"], summary["val"], args.mode, src, dst)
    log.info("search on it with: %s", summary["command"])
    return summary


def write_subset(args: argparse.Namespace, src: Path, dst: Path, chosen: dict) -> None:
    """Replace DST's train/, val/ and subset.json by the chosen images and their manifest."""
    for old in (dst / "train", dst / "val", dst / "subset.json"):  # only these, and only with --force
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    link = LINKERS[args.mode]
    for split in SPLITS:
        for name, (_, files) in chosen[split].items():
            (dst / split / name).mkdir(parents=True)
            for file in files:
                link(src / split / name / file, dst / split / name / file)
    # Written last: a subset.json in DST says the subset is complete.
    write_json(dst / "subset.json", {
        "source": str(src), "fraction": args.fraction, "val_fraction": args.val_fraction,
        "seed": args.seed, "mode": args.mode,
        "source_counts": {s: {c: n for c, (n, _) in chosen[s].items()} for s in SPLITS},
        "counts": {s: {c: len(f) for c, (_, f) in chosen[s].items()} for s in SPLITS},
        "files": {s: [f"{s}/{c}/{f}" for c, (_, fs) in chosen[s].items() for f in fs] for s in SPLITS},
    })


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    run_cli(main)
