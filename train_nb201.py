"""Train a NAS-Bench-201 cell from scratch with the benchmark's own protocol (200 epochs, SGD with
Nesterov momentum 0.9, lr 0.1 cosine to 0, weight decay 5e-4, batch 256; 16 channels, 5 cells per
stage), or evaluate a trained checkpoint (`--mode eval`). The cell comes from `--arch_str` or a
`train_search.py --search_space nb201` run directory."""
from __future__ import annotations

import argparse

import torch.nn as nn

import utils
from architectures import NB201_FORMAT, nb201_from_dict, parse_nb201_arch, read_arch_json
from data import DATASETS, get_datasets
from model import NetworkNB201
from plumbing import rundir
from plumbing.drivers.engine import plan_run, run
from plumbing.drivers.train_args import add_common_args, check_common_args


def build_parser() -> argparse.ArgumentParser:
    """Flags of train_nb201.py (NAS-Bench-201's training protocol as defaults)."""
    p = utils.ArgumentParser(description=__doc__)
    add_common_args(p, auxiliary=False, epochs=200, batch_size=256, learning_rate=0.1, weight_decay=5e-4,
                    drop_path_prob=0.0, init_channels=16, layers=5, report_freq=50, workers=None, nesterov=True,
                    layers_help="cells per stage (three stages, joined by residual reduction blocks)")
    g = p.add_argument_group("architecture")
    g.add_argument("--arch_str", default=None,
                   help="the cell as the benchmark writes it: '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'")
    g.add_argument("--base_dir", default=None,
                   help="instead: a search run directory of train_search.py --search_space nb201")
    g.add_argument("--genotype_names", type=int, nargs="+", default=[-1],
                   help="epoch(s) of the run's architecture files; negative counts from the last (-1 = last epoch)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="../data", help="folder holding (or receiving) the data set")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set (imagenet16: ImageNet16-120)")
    g.add_argument("--image_size", type=int, default=32, help="side images are resized to (--dataset folder)")
    return p


def arch_sources(args) -> list[tuple[str, str]]:
    """[(source label, architecture string)] from --arch_str or --base_dir + --genotype_names."""
    if (args.arch_str is None) == (args.base_dir is None):
        raise utils.UserError("give exactly one architecture source: --arch_str or --base_dir")
    if args.arch_str is not None:
        parse_nb201_arch(args.arch_str)
        return [(args.arch_str.strip(), args.arch_str.strip())]
    paths = [rundir.epoch_file(args.base_dir, name) for name in args.genotype_names]
    return [(str(path), read_arch_json(path, nb201_from_dict)) for path in paths]


def main(argv: list[str] | None = None) -> list[dict]:
    """Train every requested cell (or evaluate a checkpoint); return their results."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    sources = arch_sources(args) if args.mode == "train" and not args.resume else None
    if args.plan:
        return plan_run(args, NetworkNB201, args.dataset, criterion=nn.CrossEntropyLoss(), base=args.base_dir,
                        names=args.genotype_names, kind=rundir.NB201_EVAL, sources=lambda: sources)
    datasets = get_datasets(args.dataset, args.data, image_size=args.image_size, test=not args.no_test)
    image_size = datasets[0][0][0].shape[-1]  # for counting mult-adds: read off one training image
    return run(args, NetworkNB201, datasets, base=args.base_dir, names=args.genotype_names,
               image_size=image_size, criterion=nn.CrossEntropyLoss(),
               lr_at=lambda epoch: utils.cosine_lr(epoch, args.epochs, args.learning_rate),
               kind=rundir.NB201_EVAL, fmt=NB201_FORMAT, sources=lambda: sources)


if __name__ == "__main__":
    utils.run_script(main)
