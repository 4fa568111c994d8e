"""The search's flags (train_search.py): the authors' names and defaults, the checks that turn an
impossible combination into one line, the search space's recipe filled in where no flag was
given, and what to change when a phase runs out of memory."""
from __future__ import annotations

import argparse
from pathlib import Path

import utils
from architect import REG_TYPES
from data import DATASETS
from plumbing import distributed, divergence, oom, rundir
from plumbing.drivers import plan
from saliency import CRITERIA
from search_spaces import NONE_RULES, SPACES, apply_recipe, get_space, recipe_defaults

LR_SCHEDULES = ("cosine", "warmup_cosine_nb201")
DESCRIPTION = ("FP-DARTS search: first-order DARTS on a supernet whose weakest ops are pruned by search-loss "
               "gradient saliency, twice per epoch after a warm-up, until the final cell remains.")


def build_parser() -> argparse.ArgumentParser:
    """Flags of the search (the authors' names and defaults)."""
    p = utils.ArgumentParser(description=DESCRIPTION)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="../data", help="folder holding (or receiving) the data set")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set to search on")
    g.add_argument("--batch_size", type=int, default=64,
                   help="batch size of both the weight and the architecture steps")
    g.add_argument("--train_portion", type=float, default=0.5,
                   help="share of the training set for the weights; the rest trains alpha and scores saliency")
    g.add_argument("--data_split", default=None, choices=("train_portion", "benchmark"),
                   help=f"split by --train_portion or --nb201_splits (default: {recipe_defaults('data_split')})")
    g.add_argument("--nb201_splits", default=None, metavar="DIR",
                   help="folder of NAS-Bench-201's split files (configs/nas-benchmark/ of its code)")
    g.add_argument("--scoring_transform", default=None, choices=("train", "test"),
                   help="transform of the saliency, s1r and validation images "
                        f"(default: {recipe_defaults('scoring_transform')})")
    g.add_argument("--no_flip", dest="flip", action="store_false",
                   help="no random horizontal flips in the training transform (default: flips, SVHN included)")
    g.add_argument("--cutout", action="store_true", help="apply cutout to the search batches")
    g.add_argument("--cutout_length", type=int, default=16, help="cutout square side in pixels")
    g.add_argument("--image_size", type=int, default=32, help="side images are resized to (--dataset folder only)")
    g.add_argument("--subset", type=int, default=None,
                   help="test/debug: use only N training images (the first N; a fixed random N for --dataset folder)")
    g.add_argument("--workers", type=int, default=None, help=utils.WORKERS_HELP)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help=f"search epochs (default: {recipe_defaults('epochs')})")
    g.add_argument("--learning_rate", type=float, default=0.025, help="initial (peak) weight learning rate")
    g.add_argument("--lr_schedule", default=None, choices=LR_SCHEDULES,
                   help=f"cosine, or NAS-Bench-201's with warm-up (default: {recipe_defaults('lr_schedule')})")
    g.add_argument("--learning_rate_min", type=float, default=0.001, help="final weight learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum of the weights")
    g.add_argument("--weight_decay", type=float, default=None,
                   help=f"weight decay of the weights (default: {recipe_defaults('weight_decay')})")
    g.add_argument("--grad_clip", type=float, default=5, help="gradient-norm clip of the weight step")
    g.add_argument("--arch_learning_rate", type=float, default=3e-4, help="Adam learning rate of alpha")
    g.add_argument("--arch_weight_decay", type=float, default=1e-3, help="Adam weight decay of alpha")
    g.add_argument("--nesterov", action="store_const", const=True, default=None,
                   help=f"Nesterov momentum for the weights (default: {recipe_defaults('nesterov')})")
    g.add_argument("--no_nesterov", dest="nesterov", action="store_const", const=False, default=argparse.SUPPRESS,
                   help="plain momentum")
    g.add_argument("--step_order", default=None, choices=("arch_first", "weight_first"),
                   help=f"which step of an iteration comes first (default: {recipe_defaults('step_order')})")
    g.add_argument("--unrolled", action="store_true", help="second-order (unrolled) architecture step of DARTS")
    g = p.add_argument_group("supernet")
    g.add_argument("--search_space", default="darts", choices=SPACES,
                   help="darts: 7 ops on every edge; s1-s4: RobustDARTS' spaces; nb201: NAS-Bench-201")
    g.add_argument("--init_channels", type=int, default=16, help="channels of the first cell")
    g.add_argument("--layers", type=int, default=None,
                   help="cells in the supernet (default 8); with --search_space nb201, cells per stage (default 5)")
    g.add_argument("--steps", type=int, default=None,
                   help="intermediate nodes per DARTS cell (default 4: 14 edges); s1 has 4 and nb201 its own cell")
    g.add_argument("--drop_path_prob", type=float, default=None,
                   help=f"drop-path of every edge, ramped from 0 over the epochs "
                        f"(default: {recipe_defaults('drop_path_prob')})")
    g.add_argument("--track_running_stats", type=int, default=None, choices=(0, 1),
                   help="1: the cells' BN keeps running statistics; 0: batch statistics always "
                        f"(default: {recipe_defaults('track_running_stats')})")
    g = p.add_argument_group("pruning")
    g.add_argument("--sal_type", default="task", choices=list(CRITERIA),
                   help="; ".join(f"{c.name}: {c.help}" for c in CRITERIA.values()))
    g.add_argument("--sal_second", action="store_true",
                   help="s2: add the Hessian-diagonal term (second order of the Taylor expansion)")
    g.add_argument("--sal_hessian_coef", type=float, default=1.0,
                   help="coefficient of the Hessian term (1 as in the authors' code; 0.5 is the textbook Taylor value)")
    g.add_argument("--sal_source", default="pass", choices=("pass", "arch_steps"),
                   help="s1 term: pass = a pass over the search split per event; "
                        "arch_steps = averaged over the arch steps")
    g.add_argument("--sal_batch_size", type=int, default=None,
                   help=f"saliency batch size (default: --batch_size; with --sal_second: "
                        f"{recipe_defaults('s2_batch_size')})")
    g.add_argument("--sal_second_budget", type=int, default=500,
                   help="s2 uses about this many Hessian rows per event: ceil(budget / live ops) batches")
    g.add_argument("--hessian_chunk", type=int, default=16,
                   help="Hessian diagonal entries computed at once (memory grows with it)")
    g.add_argument("--warmup", type=int, default=None,
                   help=f"epochs without pruning (default: {recipe_defaults('warmup')})")
    g.add_argument("--prune_interval", type=int, default=None,
                   help="test/debug: prune every N weight steps (default: half an epoch, i.e. twice per epoch)")
    g.add_argument("--num_compare", type=int, default=1,
                   help="N > 1: re-check the N lowest-saliency ops on the validation loss (s1r uses 5)")
    g.add_argument("--iter_compare", type=int, default=30,
                   help="each candidate is measured on iter_compare + 1 validation batches")
    g.add_argument("--fixed_compare_batches", action="store_true",
                   help="score every candidate of an event on the same validation batches "
                        "(the authors draw fresh ones)")
    g.add_argument("--reg_type", default="norm", choices=REG_TYPES,
                   help="regulariser on the mixing weight of pruned ops")
    g.add_argument("--reg_alpha", type=float, default=None,
                   help=f"weight of the pruned-op regulariser; 0: none (default: {recipe_defaults('reg_alpha')})")
    g.add_argument("--none_rule", default="skip", choices=NONE_RULES,
                   help="S3's none: skip: no input, pruned, never derived (ours); count: like any op (the authors')")
    g.add_argument("--no_restrict", action="store_true",
                   help="larger search space: no 2-inputs-per-node rule; keep --num_kept_min ops per cell anywhere")
    g.add_argument("--num_kept_max", type=int, default=8, help="--no_restrict: ops in the derived genotype")
    g.add_argument("--num_kept_min", type=int, default=8,
                   help="--no_restrict: pruning stops at this many live ops per cell")
    g.add_argument("--audit_every", type=int, default=0,
                   help="saliency audit every K prune events against the true change of the loss (audit.jsonl); 0: off")
    g.add_argument("--audit_batches", type=int, default=10,
                   help="saliency batches (the event's first ones) the audit measures on")
    g.add_argument("--nb201_file", default=None,
                   help="--search_space nb201: the benchmark file, to look up every epoch's cell")
    g = p.add_argument_group("run")
    g.add_argument("--save", default="EXP", help="experiment name, part of the run directory name")
    g.add_argument("--task", type=int, default=0, help="tag appended to the run directory name")
    g.add_argument("--out_dir", default="ckpt", help="folder that receives the run directory")
    g.add_argument("--seed", type=int, default=-1, help="random seed; -1 draws one in [0, 10000) and logs it")
    g.add_argument("--gpu", type=int, default=0, help="CUDA device index (the CPU is used when CUDA is absent)")
    g.add_argument("--report_freq", type=int, default=50, help="log every N steps")
    g.add_argument("--save_one_shot", action="store_true", help="also keep the supernet of every epoch")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (bit-identical CPU runs; slower on GPUs)")
    g.add_argument("--resume", default=None,
                   help="continue an interrupted search in place: its run directory or checkpoint.pt "
                        "(give the same flags)")
    utils.add_memory_format_flags(g, "auto", "default: on for the CPU, off on CUDA")
    g.add_argument("--no_summary", dest="summary", action="store_false",
                   help="no summary figure (summary.png/.pdf) at the end; scripts/plot_search.py draws it later")
    g.add_argument("--amp", action="store_true",
                   help="bf16 autocast of the forward passes (CUDA; the s2 Hessian term and validation stay float32)")
    distributed.add_flags(g)
    divergence.add_flags(g)
    plan.add_flags(p)
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in the search space's sizes and recipe; reject impossible values and combinations
    with one line."""
    try:
        space = get_space(args.search_space, args.steps or 4, args.none_rule)
    except ValueError as e:
        p.error(str(e))
    if space.fixed_cell and args.steps is not None:
        p.error(f"--steps does not apply to --search_space {args.search_space} (its cell has fixed nodes)")
    if args.no_restrict and not space.has_restrict_rule:
        p.error(f"--no_restrict is a DARTS-cell rule; --search_space {args.search_space} has its own end state")
    if args.sal_source == "arch_steps" and (not CRITERIA[args.sal_type].taylor or args.unrolled):
        taylor = [c.name for c in CRITERIA.values() if c.taylor]
        p.error(f"--sal_source arch_steps needs --sal_type {' or '.join(taylor)} and the first-order architecture "
                "step (no --unrolled)")
    if args.nb201_file is not None and not space.has_benchmark:
        p.error("--nb201_file needs --search_space nb201")
    if args.nb201_file is not None and not Path(args.nb201_file).exists():
        p.error(f"--nb201_file {args.nb201_file}: no such file or folder")
    args.steps = space.steps
    args.layers = args.layers or space.default_layers
    if args.none_rule == "count" and args.no_restrict:
        p.error("--none_rule count changes the restricted rule; --no_restrict has none")
    apply_recipe(args, space.recipe)  # the authors' settings in this space, where no flag was given
    positive = ["batch_size", "epochs", "num_compare", "init_channels", "layers", "steps", "sal_second_budget",
                "hessian_chunk", "iter_compare", "num_kept_max", "num_kept_min", "audit_batches", "sal_batch_size"]
    positive += [k for k in ("prune_interval", "subset") if getattr(args, k) is not None]
    for name in positive:
        if getattr(args, name) < (0 if name == "iter_compare" else 1):
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.audit_every < 0:
        p.error(f"--audit_every must be 0 (off) or positive, got {args.audit_every}")
    if not 0 < args.train_portion < 1:
        p.error(f"--train_portion must be in (0, 1), got {args.train_portion}")
    if not 0 <= args.warmup < args.epochs:
        p.error(f"--warmup ({args.warmup}) must be at least 0 and below --epochs ({args.epochs})")
    if not 0 <= args.drop_path_prob < 1:
        p.error(f"--drop_path_prob must be in [0, 1), got {args.drop_path_prob}")
    if args.nb201_splits is not None and args.data_split != "benchmark":
        p.error("--nb201_splits needs --data_split benchmark (the default with --search_space nb201)")
    if args.nb201_splits is not None and args.subset is not None:
        p.error("--subset takes part of the training set; with --nb201_splits the split files say which images")
    plan.check_flags(p, args)
    divergence.check_flags(p, args)
    args.plan_file = plan.plan_file(args, args.out_dir, rundir.SEARCH) if args.plan else None


def oom_advice(args, run_dir: Path) -> dict:
    """What to change when a phase runs out of memory (stops.Guard): which flags, and whether the
    run can go on from its checkpoint with them (--hessian_chunk and the audit's flags change
    nothing else and may differ on --resume; the batch sizes are part of the search)."""
    batch = oom.lower("batch_size", args.batch_size, "search")
    saliency = oom.lower("sal_batch_size", args.sal_batch_size, "search")
    resume = f"resume with the same flags and --resume {run_dir}"
    if args.sal_second:
        saliency = (f"{resume} --hessian_chunk {max(args.hessian_chunk // 2, 1)} (now {args.hessian_chunk}), "
                    f"or {saliency}")
    return {None: batch, "saliency": saliency,
            "audit": f"{resume} and a lower --hessian_chunk (now {args.hessian_chunk}) or --audit_every 0"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The search's flags, checked and completed (defaults that depend on other flags)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args
