"""Train a searched cell from scratch on CIFAR-10/100, SVHN or an image folder (`--mode train`),
or evaluate a trained checkpoint on the test set (`--mode eval`)."""
from __future__ import annotations

import argparse

import torch.nn as nn

import utils
from data import DATASETS, get_datasets
from model import NetworkCIFAR
from plumbing import rundir
from plumbing.drivers.engine import plan_run, run
from plumbing.drivers.train_args import add_common_args, add_genotype_args, check_auxiliary, check_common_args


def build_parser() -> argparse.ArgumentParser:
    """Flags of train.py (DARTS defaults)."""
    p = utils.ArgumentParser(description=__doc__)
    add_common_args(p, epochs=600, batch_size=96, learning_rate=0.025, weight_decay=3e-4, drop_path_prob=0.2,
                    init_channels=36, layers=20, report_freq=50, workers=None)
    add_genotype_args(p, "--base_dir", "--genotype_names", "+")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="../data", help="folder holding (or receiving) the data set")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set")
    g.add_argument("--image_size", type=int, default=32, help="side images are resized to (--dataset folder)")
    g.add_argument("--cutout", dest="cutout", action="store_true", default=True,
                   help="cutout augmentation (on by default, as in DARTS)")
    g.add_argument("--no_cutout", dest="cutout", action="store_false", default=argparse.SUPPRESS,
                   help="turn cutout off")
    g.add_argument("--cutout_length", type=int, default=16, help="cutout square side in pixels")
    g.add_argument("--no_flip", dest="flip", action="store_false",
                   help="no random horizontal flips in training (default: flips, SVHN included)")
    g.add_argument("--auxiliary", dest="auxiliary", action="store_true", default=True,
                   help="auxiliary head at 2/3 depth (on by default, as in DARTS)")
    g.add_argument("--no_auxiliary", dest="auxiliary", action="store_false", default=argparse.SUPPRESS,
                   help="train without the auxiliary head")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    """Train every requested genotype (or evaluate a checkpoint); return their results."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    if args.plan:
        return plan_run(args, NetworkCIFAR, args.dataset, criterion=nn.CrossEntropyLoss(), base=args.base_dir,
                        names=args.genotype_names, kind=rundir.EVAL, aux_side=32)
    datasets = get_datasets(args.dataset, args.data, cutout=args.cutout, cutout_length=args.cutout_length,
                            image_size=args.image_size, test=not args.no_test, flip=args.flip)
    image_size = datasets[0][0][0].shape[-1]  # for counting mult-adds: read off one training image
    check_auxiliary(args, image_size, 32)
    return run(args, NetworkCIFAR, datasets, base=args.base_dir, names=args.genotype_names,
               image_size=image_size, criterion=nn.CrossEntropyLoss(),
               lr_at=lambda epoch: utils.cosine_lr(epoch, args.epochs, args.learning_rate), kind=rundir.EVAL)

if __name__ == "__main__":
    utils.run_script(main)
