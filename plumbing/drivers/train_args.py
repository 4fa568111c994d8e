"""The flags the training scripts (train.py, train_imagenet.py, train_nb201.py) share, and their
checks."""
from __future__ import annotations

import argparse

import torch

import utils
from data import RESIZED
from genotypes import is_restricted, load_genotype, load_genotype_of
from plumbing import distributed, divergence
from plumbing.drivers import plan


def add_genotype_args(p: argparse.ArgumentParser, base_flag: str, names_flag: str, nargs) -> None:
    """The genotype source flags (shared with train_imagenet.py, which spells two of them differently)."""
    g = p.add_argument_group("genotype")
    g.add_argument(base_flag, default=None, help="search run directory made by train_search.py")
    g.add_argument(names_flag, type=int, nargs=nargs, default=[-1] if nargs else -1,
                   help="epoch(s) of the run's genotype files; negative counts from the last (-1 = last epoch)")
    g.add_argument("--arch", default=None, help="a genotype named in genotypes.py (instead of a run directory)")
    g.add_argument("--genotype", default=None, help="a genotype file: JSON or a Genotype(...) line")
    g.add_argument("--no_restrict", action="store_true",
                   help="the genotype is of the larger space (3-element genes); detected automatically")


def add_common_args(p: argparse.ArgumentParser, auxiliary: bool = True, **defaults) -> None:
    """Flags the training scripts share; `defaults` holds the values that differ (`nesterov`,
    `layers_help` optional); `auxiliary` False for networks without an auxiliary head."""
    p.add_argument("--mode", default="train", choices=["train", "eval"],
                   help="train from scratch, or evaluate --model_path on the test set")
    p.add_argument("--model_path", default=None, help="checkpoint to evaluate (--mode eval)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=defaults["epochs"], help="training epochs")
    g.add_argument("--batch_size", type=int, default=defaults["batch_size"], help="batch size")
    g.add_argument("--learning_rate", type=float, default=defaults["learning_rate"],
                   help="initial learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--nesterov", dest="nesterov", action="store_true", default=defaults.get("nesterov", False),
                   help="Nesterov momentum")
    g.add_argument("--no_nesterov", dest="nesterov", action="store_false", default=argparse.SUPPRESS,
                   help="plain (heavy-ball) momentum")
    g.add_argument("--weight_decay", type=float, default=defaults["weight_decay"], help="weight decay")
    g.add_argument("--grad_clip", type=float, default=5, help="gradient-norm clip")
    g.add_argument("--drop_path_prob", type=float, default=defaults["drop_path_prob"],
                   help="drop-path probability, ramped linearly from 0 over the epochs")
    if auxiliary:
        g.add_argument("--auxiliary_weight", type=float, default=0.4, help="weight of the auxiliary head's loss")
    else:
        p.set_defaults(auxiliary=False, auxiliary_weight=0.0)
    g = p.add_argument_group("network")
    g.add_argument("--init_channels", type=int, default=defaults["init_channels"],
                   help="channels of the first cell")
    g.add_argument("--layers", type=int, default=defaults["layers"],
                   help=defaults.get("layers_help", "number of cells"))
    g = p.add_argument_group("run")
    g.add_argument("--save", default="EXP", help="experiment name, part of the run directory name")
    g.add_argument("--out_dir", default=None,
                   help="folder that receives the run directory (default: the search run directory, else ckpt)")
    g.add_argument("--seed", type=int, default=0, help="random seed (-1 draws one)")
    g.add_argument("--gpu", type=int, default=0, help="CUDA device index (the CPU is used when CUDA is absent)")
    g.add_argument("--report_freq", type=int, default=defaults["report_freq"], help="log every N steps")
    workers_help = utils.WORKERS_HELP if defaults["workers"] is None else "data loader worker processes"
    g.add_argument("--workers", type=int, default=defaults["workers"], help=workers_help)
    g.add_argument("--val_portion", type=float, default=0.0,
                   help="hold out this share of the training set to choose epochs/genotypes on "
                        "(0 = off, as in the paper)")
    g.add_argument("--no_test", action="store_true",
                   help="never open the test split (select with --val_portion; results.json holds validation figures)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    g.add_argument("--sync_bn", action="store_true",
                   help="SyncBatchNorm across processes under torchrun (CUDA only): "
                        "batch statistics over the global batch")
    utils.add_memory_format_flags(g, "off", "default: off")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (bit-identical CPU runs; slower on GPUs)")
    g.add_argument("--resume", default=None,
                   help="continue an interrupted run: its directory or checkpoint.pt "
                        "(the genotype comes from the checkpoint)")
    distributed.add_flags(g)
    divergence.add_flags(g)
    plan.add_flags(p)


def check_common_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject impossible values and conflicting flags with one line."""
    for name in ("epochs", "batch_size", "init_channels", "layers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    if not 0 <= args.val_portion < 1:
        p.error(f"--val_portion must be in [0, 1), got {args.val_portion}")
    if args.mode == "eval" and not args.model_path:
        p.error("--mode eval needs --model_path")
    if args.no_test and (args.val_portion <= 0 or args.mode == "eval"):
        p.error("--no_test needs --val_portion > 0 (something to validate on) and --mode train")
    if args.sync_bn and not torch.cuda.is_available() and distributed.launched_processes() > 1:
        p.error("--sync_bn needs CUDA: SyncBatchNorm does not run on the CPU")
    divergence.check_flags(p, args)
    plan.check_flags(p, args)


def check_auxiliary(args, image_size: int, expected: int) -> None:
    """The DARTS auxiliary heads are built for one input size (32 px on CIFAR, 224 on ImageNet)."""
    if args.auxiliary and args.mode == "train" and image_size != expected:
        resize = f" (or --image_size {expected})" if args.dataset in RESIZED else ""
        raise utils.UserError(f"the auxiliary head needs {expected}x{expected} images, these are "
                              f"{image_size}x{image_size}: give --no_auxiliary{resize}")


def genotype_sources(base_dir: str | None, names: list, arch: str | None,
                     genotype_path: str | None, no_restrict: bool) -> list[tuple[str, object]]:
    """[(source label, genotype)] from `--arch`, `--genotype` or `--base_dir` + epoch names,
    checked against `--no_restrict` (a restricted genotype cannot be trained as unrestricted;
    an unrestricted one is recognised by its 3-element genes without the flag)."""
    given = [x is not None for x in (base_dir, arch, genotype_path)]
    if sum(given) != 1:
        raise utils.UserError("give exactly one genotype source: --base_dir, --arch or --genotype")
    if base_dir is not None:
        sources = [(str(path), genotype) for genotype, path in
                   (load_genotype_of(base_dir, name) for name in names)]
    else:
        spec = arch if arch is not None else genotype_path
        sources = [(spec, load_genotype(spec))]
    for label, genotype in sources:
        if no_restrict and is_restricted(genotype):
            raise utils.UserError(f"{label}: --no_restrict was given but this is a restricted (DARTS) "
                                  "genotype with 2-element genes; drop --no_restrict")
    return sources
