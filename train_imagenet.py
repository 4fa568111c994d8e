"""Train a searched cell from scratch on ImageNet (an ImageFolder root with train/ and val/), or
evaluate a trained checkpoint (`--mode eval`)."""
from __future__ import annotations

import argparse
import os

import torch.nn as nn

import utils
from data import get_datasets
from model import NetworkImageNet
from plumbing import rundir
from plumbing.drivers.engine import plan_run, run
from plumbing.drivers.train_args import add_common_args, add_genotype_args, check_auxiliary, check_common_args


def build_parser() -> argparse.ArgumentParser:
    """Flags of train_imagenet.py (the authors' defaults)."""
    p = utils.ArgumentParser(description=__doc__)
    add_common_args(p, epochs=250, batch_size=256, learning_rate=0.1, weight_decay=3e-5, drop_path_prob=0.0,
                    init_channels=48, layers=14, report_freq=100, workers=min(8, os.cpu_count() or 1))
    add_genotype_args(p, "--base_path", "--genotype_name", None)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="../data/imagenet", help="ImageFolder root holding train/ and val/")
    g.add_argument("--image_size", type=int, default=224, help="training crop / evaluation centre-crop side")
    g.add_argument("--auxiliary", dest="auxiliary", action="store_true", default=False,
                   help="auxiliary head at 2/3 depth (the README's commands turn it on)")
    g.add_argument("--no_auxiliary", dest="auxiliary", action="store_false", default=argparse.SUPPRESS,
                   help="train without the auxiliary head")
    g = p.add_argument_group("schedule")
    g.add_argument("--label_smooth", type=float, default=0.1, help="label smoothing of the training loss")
    g.add_argument("--lr_scheduler", default="linear", choices=["linear", "cosine", "step"],
                   help="linear (the authors'), cosine, or step (DARTS: x gamma every epoch)")
    g.add_argument("--gamma", type=float, default=0.97, help="decay per epoch of --lr_scheduler step")
    g.add_argument("--warmup_epochs", type=int, default=5,
                   help="linear warm-up epochs, used when --batch_size exceeds 256")
    return p


def lr_function(args: argparse.Namespace):
    """Learning rate as a pure function of the epoch, with warm-up for batches above 256."""
    schedule = {"linear": lambda e: utils.linear_lr(e, args.epochs, args.learning_rate),
                "cosine": lambda e: utils.cosine_lr(e, args.epochs, args.learning_rate),
                "step": lambda e: utils.step_lr(e, args.learning_rate, args.gamma)}[args.lr_scheduler]
    if args.batch_size > 256:
        return lambda e: utils.warmup_lr(schedule(e), e, args.warmup_epochs)
    return schedule


def main(argv: list[str] | None = None) -> list[dict]:
    """Train the requested genotype (or evaluate a checkpoint); return the results."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    check_auxiliary(args, args.image_size, 224)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smooth)
    if args.plan:
        return plan_run(args, NetworkImageNet, "imagenet", criterion=criterion, base=args.base_path,
                        names=[args.genotype_name], kind=rundir.IMAGENET_EVAL)
    datasets = get_datasets("imagenet", args.data, image_size=args.image_size, test=not args.no_test)
    return run(args, NetworkImageNet, datasets, base=args.base_path, names=[args.genotype_name],
               image_size=args.image_size, criterion=criterion,
               lr_at=lr_function(args), kind=rundir.IMAGENET_EVAL)

if __name__ == "__main__":
    utils.run_script(main)
