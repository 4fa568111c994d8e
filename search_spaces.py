"""Search spaces as data: which candidate ops sit on which edge of which cell type, which ops the
pruning rule protects, when pruning is finished, and how the final architecture is derived.

The DARTS space and RobustDARTS' S1-S4 share the DARTS cell and supernet and differ only in their
op tables; NAS-Bench-201 has its own cell (4 nodes, 6 edges, one cell type), its own end state
(one live op per edge) and its own architecture format (the benchmark's string). The supernets
(`model_search.py`), the pruner (`saliency.py`) and the scripts only talk to these classes.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

from architectures import (
    GENOTYPE_FORMAT,
    NB201_ENDPOINTS,
    NB201_FORMAT,
    NB201_OPS,
    ArchFormat,
    nb201_arch_str,
)
from genotypes import PRIMITIVES, Genotype
from plumbing.fileio import atomic_write

# RobustDARTS (Zela et al., ICLR 2020) S1: two ops per edge, its own pair on every edge of each
# cell type, edges in architecture-row order (0->2, 1->2, 0->3, 1->3, 2->3, 0->4, ..., 4->5).
_SHORT = {"skip": "skip_connect", "sep3": "sep_conv_3x3", "dil3": "dil_conv_3x3",
          "dil5": "dil_conv_5x5", "max": "max_pool_3x3", "avg": "avg_pool_3x3"}
_S1_NORMAL = ("skip dil3, skip dil5, skip dil5, skip sep3, skip dil3, max skip, skip sep3, "
              "skip sep3, skip dil3, skip sep3, max skip, skip dil3, dil3 dil5, dil3 dil5")
_S1_REDUCE = ("max avg, max dil3, max avg, max avg, skip dil5, max avg, max sep3, skip dil3, "
              "skip dil5, max avg, max avg, skip dil5, skip dil5, skip dil5")


def _pairs(table: str) -> list[list[str]]:
    return [[_SHORT[op] for op in pair.split()] for pair in table.split(", ")]


S1_NORMAL, S1_REDUCE = _pairs(_S1_NORMAL), _pairs(_S1_REDUCE)
# The same candidates on every edge of both cell types.
UNIFORM_OPS = {
    "darts": PRIMITIVES,
    "s2": ["skip_connect", "sep_conv_3x3"],
    "s3": ["none", "skip_connect", "sep_conv_3x3"],
    "s4": ["noise", "sep_conv_3x3"],
}
SPACES = ("darts", "s1", "s2", "s3", "s4", "nb201")
NONE_RULES = ("skip", "count")


# ---------------------------------------------------------------- the authors' search recipes

@dataclass(frozen=True)
class Recipe:
    """How the authors searched in a space: the defaults of the search flags named in
    `RECIPE_FLAGS` (a flag given on the command line wins; the run directory records the
    effective values). The field defaults are the DARTS-space search (`cnn/`)."""
    epochs: int = 60
    warmup: int = 10
    weight_decay: float = 3e-4
    nesterov: bool = False
    lr_schedule: str = "cosine"
    reg_alpha: float = 0.1
    step_order: str = "arch_first"
    drop_path_prob: float = 0.0
    s2_batch_size: int = 32
    data_split: str = "train_portion"
    scoring_transform: str = "train"
    track_running_stats: int = 1


# The flag of each recipe field (the field's own name unless listed here).
RECIPE_FLAGS = {"s2_batch_size": "sal_batch_size"}
DARTS_RECIPE = Recipe()
# RobustDARTS spaces (`cnn/RDARTS_search/`): 50 epochs with 20 of warm-up (their run script),
# drop-path 0.2 in the supernet (their flag default), s2 on batches of 96.
RDARTS_RECIPE = Recipe(epochs=50, warmup=20, drop_path_prob=0.2, s2_batch_size=96)
# NAS-Bench-201 (PruneNAS: its config and script): 10 warm-up + 30 epochs, Nesterov, weight
# decay 5e-4, the warm-up + truncated cosine schedule, no pruned-op regulariser (their
# --reg_alpha is unused), the weight step first, the benchmark's splits, scoring on test-time
# transforms. s2 never ran there (their s2 path crashes): the DARTS-space batch of 32.
NB201_RECIPE = Recipe(epochs=40, warmup=10, weight_decay=5e-4, nesterov=True, lr_schedule="warmup_cosine_nb201",
                      reg_alpha=0.0, step_order="weight_first", data_split="benchmark", scoring_transform="test")
RECIPES = {"darts": DARTS_RECIPE, **{name: RDARTS_RECIPE for name in ("s1", "s2", "s3", "s4")}, "nb201": NB201_RECIPE}


def recipe_flag(field: str) -> str:
    """The argparse destination of a recipe field."""
    return RECIPE_FLAGS.get(field, field)


def recipe_defaults(field: str) -> str:
    """Each space's default of a recipe field, for help texts: 'darts 60, s1-s4 50, nb201 40'."""
    groups: dict = {}
    for name in SPACES:
        groups.setdefault(getattr(RECIPES[name], field), []).append(name)
    if len(groups) == 1:
        return f"{next(iter(groups))} in every space"
    rdarts = ["s1", "s2", "s3", "s4"]
    text = lambda names: "/".join(["s1-s4" if n == "s1" else n for n in names if n not in rdarts[1:]]
                                  if set(rdarts) <= set(names) else names)
    return ", ".join(f"{text(names)} {value}" for value, names in groups.items())


def apply_recipe(args, recipe: Recipe) -> None:
    """Fill every recipe flag left unset (None) in `args` from `recipe`. s2's batch is the
    saliency batch only with --sal_second (s1 scores on --batch_size batches)."""
    for f in fields(Recipe):
        dest = recipe_flag(f.name)
        if getattr(args, dest) is None:
            value = getattr(recipe, f.name)
            if f.name == "s2_batch_size" and not args.sal_second:
                value = args.batch_size
            setattr(args, dest, value)


def recipe_values(args) -> dict:
    """The effective recipe of a search, {flag destination: value}, as `search_space.json` records it."""
    return {recipe_flag(f.name): getattr(args, recipe_flag(f.name)) for f in fields(Recipe)}


def num_edges(steps: int) -> int:
    """Edges of a DARTS cell with `steps` intermediate nodes: 2 + 3 + ... = 14 for 4 nodes."""
    return sum(2 + i for i in range(steps))


def edge_endpoints(steps: int) -> list[tuple[int, int]]:
    """(source node, destination node) of every edge of a DARTS cell, in architecture-row order."""
    return [(j, 2 + i) for i in range(steps) for j in range(2 + i)]


# ---------------------------------------------------------------- the DARTS-cell rules

def eligible_ops(keep: Tensor, steps: int, restrict: bool, connects: Tensor | None = None) -> Tensor:
    """Which live ops (edges, n_ops) of one DARTS cell may be pruned now.

    Unrestricted: every live op. Restricted: every intermediate node must keep at least 2
    distinct input edges with a live op that connects (`connects`: not `none`, which carries
    nothing), so when a node is down to 2 such edges, the last connecting op of each is protected.
    """
    eligible = keep.clone()
    if not restrict:
        return eligible
    conn = keep if connects is None else keep & connects
    start = 0
    for i in range(steps):
        rows = slice(start, start + 2 + i)
        per_edge = conn[rows].sum(1)  # live connecting ops per incoming edge
        if int((per_edge > 0).sum()) <= 2:
            eligible[rows] &= ~((per_edge == 1).unsqueeze(1) & conn[rows])
        start += 2 + i
    return eligible


def has_redundant_op(keep: Tensor, steps: int, restrict: bool, num_kept_min: int) -> bool:
    """Whether pruning goes on in this cell: some node has > 2 live ops (restricted), or the
    cell has more than `num_kept_min` live ops (unrestricted)."""
    if not restrict:
        return int(keep.sum()) > num_kept_min
    dst = torch.tensor([d for _, d in edge_endpoints(steps)], device=keep.device)  # (edges,)
    per_node = torch.zeros(steps + 2, dtype=torch.long, device=keep.device)  # (nodes,)
    per_node.index_add_(0, dst, keep.sum(1).long())
    return bool((per_node[2:] > 2).any())


def derive_cell(weights: Tensor, keep: Tensor, steps: int, primitives: list, restrict: bool,
                num_kept_max: int = 8, none_counts: bool = False) -> tuple[list[tuple], list[int]]:
    """Genes and concat of one DARTS cell from its masked mixing weights (edges, n_ops).

    `primitives`: the op names of every edge (one list), or one list per edge. `none` is never
    chosen. Restricted (DARTS rule): per node, the 2 incoming edges with the strongest live op,
    then that op; genes (op, src), concat = all intermediate nodes. Unrestricted (FP-DARTS larger
    space): the `num_kept_max` strongest live ops of the whole cell, taken in node order and kept
    only when their source node is active; genes (op, src, dst), concat = the active nodes.

    `none_counts` (the authors' S3 rule, restricted only): pruned ops weigh 0 instead of -1, so an
    edge whose only live op is `none` ranks like a fully pruned one and, when picked, writes its
    first op other than `none` although that op was pruned.
    """
    names = [primitives] * len(keep) if isinstance(primitives[0], str) else primitives
    is_none = torch.tensor([[op == "none" for op in edge] for edge in names], device=keep.device)
    usable = keep & ~is_none
    if none_counts:  # as the authors' derivation: beta * mask, none left out of the ranking
        weights = (weights * keep).masked_fill(is_none, -1.0)
    else:
        weights = weights.masked_fill(~usable, -1.0)  # pruned ops (and none) can never be chosen
    endpoints = edge_endpoints(steps)
    if restrict:
        genes, start = [], 0
        for i in range(steps):
            rows = range(start, start + 2 + i)
            best = sorted(rows, key=lambda e: -weights[e].max().item())[:2]
            genes += [(names[e][int(weights[e].argmax())], endpoints[e][0]) for e in best]
            start += 2 + i
        return genes, list(range(2, 2 + steps))
    top = weights.flatten().topk(min(int(usable.sum()), num_kept_max)).indices.sort().values
    genes, active = [], {0, 1}
    for flat in top.tolist():
        edge, op = divmod(flat, keep.size(1))
        src, dst = endpoints[edge]
        if src in active:
            genes.append((names[edge][op], src, dst))
            active.add(dst)
    return genes, sorted(active - {0, 1})


# ---------------------------------------------------------------- the spaces

class SearchSpace(ABC):
    """What the supernet, the pruner and the scripts need to know about a space.

    `edge_ops[cell_type][edge]` lists the candidates of that edge (every edge has the same count,
    the width of the architecture matrices); `connects` marks the ops that carry a signal
    (not `none`) for the pruning rule.
    """
    name: str
    cell_types: tuple[str, ...]
    endpoints: list[tuple[int, int]]
    edge_ops: dict[str, list[list[str]]]
    format: ArchFormat
    recipe: Recipe  # the authors' search settings in this space
    has_none: bool  # whether the restricted rule has a `none` to tell apart (S3)
    cell_labels: dict[str, str]  # each cell type as people call it
    fixed_cell: bool  # True: the cell has its own nodes (--steps does not apply)
    default_layers: int  # the supernet's --layers (cells, or cells per stage)
    has_restrict_rule: bool  # whether --no_restrict has a meaning here
    has_benchmark: bool  # True: each cell is a key of a tabular benchmark (--nb201_file)

    @property
    def num_ops(self) -> int:
        """Candidates per edge (the width of an architecture matrix)."""
        return len(self.edge_ops[self.cell_types[0]][0])

    def op_name(self, cell: int, edge: int, op: int) -> str:
        """Name of candidate `op` of `edge` in cell type number `cell`."""
        return self.edge_ops[self.cell_types[cell]][edge][op]

    def op_index(self, cell: int, edge: int, name: str) -> int:
        """Column of op `name` on `edge` of cell type number `cell`."""
        return self.edge_ops[self.cell_types[cell]][edge].index(name)

    def describe(self) -> dict:
        """The space as JSON: cell types (and their names for people), edges (source,
        destination) and candidates per edge."""
        return {"name": self.name, "cell_types": list(self.cell_types), "cell_labels": self.cell_labels,
                "edges": [list(e) for e in self.endpoints], "edge_ops": self.edge_ops}

    def save(self, arch, path: str | Path) -> None:
        """Write an architecture as JSON, atomically."""
        atomic_write(path, json.dumps(self.format.to_dict(arch)) + "\n")

    @abstractmethod
    def eligible(self, cell: int, keep: Tensor, restrict: bool) -> Tensor:
        """Live ops (edges, n_ops) of cell type `cell` that may be pruned now."""

    @abstractmethod
    def unfinished(self, cell: int, keep: Tensor, restrict: bool, num_kept_min: int) -> bool:
        """Whether cell type `cell` still has an op to prune."""

    @abstractmethod
    def final_ops(self, restrict: bool, num_kept_min: int) -> int:
        """Live ops of a cell type when its pruning is finished."""

    @abstractmethod
    def derive(self, betas: Tensor, masks: list[Tensor], restrict: bool, num_kept_max: int):
        """The discrete architecture implied by the mixing weights (types, edges, n_ops) and masks."""


class DartsCellSpace(SearchSpace):
    """The DARTS cell (2 input nodes, `steps` intermediate nodes, output = their concatenation)
    with a candidate list per edge and per cell type (normal, reduce); DARTS genotypes."""
    cell_types = ("normal", "reduce")
    cell_labels = {"normal": "normal cell", "reduce": "reduction cell"}
    format = GENOTYPE_FORMAT
    fixed_cell, default_layers, has_restrict_rule, has_benchmark = False, 8, True, False

    def __init__(self, name: str, normal: list[list[str]], reduce: list[list[str]], steps: int,
                 recipe: Recipe = DARTS_RECIPE, none_rule: str = "skip"):
        self.name, self.steps, self.recipe = name, steps, recipe
        self.endpoints = edge_endpoints(steps)
        self.edge_ops = {"normal": normal, "reduce": reduce}
        if none_rule not in NONE_RULES:
            raise ValueError(f"unknown none rule '{none_rule}' (known: {', '.join(NONE_RULES)})")
        if none_rule == "count" and not self.has_none:
            raise ValueError(f"--none_rule count: search space {name} has no 'none' op")
        self.none_counts = none_rule == "count"
        # Ops that carry a signal for the restricted rule: all but none (under the authors' rule, all).
        self.connects = [torch.tensor([[self.none_counts or op != "none" for op in edge] for edge in ops],
                                      device="cpu") for ops in (normal, reduce)]

    @property
    def has_none(self) -> bool:
        """Whether some edge offers `none` (S3)."""
        return any("none" in edge for ops in self.edge_ops.values() for edge in ops)

    def eligible(self, cell, keep, restrict):
        return eligible_ops(keep, self.steps, restrict, self.connects[cell].to(keep.device))

    def unfinished(self, cell, keep, restrict, num_kept_min):
        return has_redundant_op(keep, self.steps, restrict, num_kept_min)

    def final_ops(self, restrict, num_kept_min):
        return 2 * self.steps if restrict else num_kept_min

    def derive(self, betas, masks, restrict, num_kept_max) -> Genotype:
        cells = [derive_cell(b * m, m, self.steps, self.edge_ops[t], restrict, num_kept_max,
                             none_counts=self.none_counts and restrict)
                 for b, m, t in zip(betas, masks, self.cell_types)]
        return Genotype(normal=cells[0][0], normal_concat=cells[0][1],
                        reduce=cells[1][0], reduce_concat=cells[1][1])


class NB201Space(SearchSpace):
    """NAS-Bench-201: node 0 is the cell input, nodes 1-3 sum one edge from every earlier node,
    node 3 is the output; 6 edges x 5 ops, one cell type. Pruning protects the last live op of
    an edge and ends with one op per edge: that op set is the architecture (a benchmark key)."""
    name = "nb201"
    cell_types = ("cell",)
    endpoints = NB201_ENDPOINTS
    format = NB201_FORMAT
    recipe = NB201_RECIPE
    has_none = False  # (its none is an ordinary op for the one-op-per-edge rule)
    cell_labels = {"cell": "cell"}
    steps = 3  # nodes after the input
    fixed_cell, default_layers, has_restrict_rule, has_benchmark = True, 5, False, True

    def __init__(self):
        self.edge_ops = {"cell": [list(NB201_OPS) for _ in NB201_ENDPOINTS]}

    def eligible(self, cell, keep, restrict):
        return keep & (keep.sum(1, keepdim=True) > 1)

    def unfinished(self, cell, keep, restrict, num_kept_min):
        return bool((keep.sum(1) > 1).any())

    def final_ops(self, restrict, num_kept_min):
        return len(self.endpoints)

    def derive(self, betas, masks, restrict, num_kept_max) -> str:
        weights = betas[0].masked_fill(~masks[0], -1.0)  # (6, 5): the strongest live op per edge
        return nb201_arch_str([NB201_OPS[int(i)] for i in weights.argmax(1)])


def get_space(name: str, steps: int = 4, none_rule: str = "skip") -> SearchSpace:
    """The search space `name` (one of SPACES); `steps` = intermediate nodes of a DARTS cell;
    `none_rule` (S3): "skip" (ours: `none` is no input of a node and is pruned before the end) or
    "count" (the authors': it counts like any op)."""
    if name == "nb201":
        if none_rule != "skip":
            raise ValueError(f"--none_rule {none_rule} is a rule of the DARTS cell's restricted pruning (S3)")
        return NB201Space()
    if name == "s1":
        if steps != 4:
            raise ValueError(f"--search_space s1 lists its ops for the 14 edges of 4 nodes; --steps {steps} "
                             "is not possible")
        return DartsCellSpace(name, S1_NORMAL, S1_REDUCE, steps, RECIPES[name], none_rule)
    if name not in UNIFORM_OPS:
        raise ValueError(f"unknown search space '{name}' (known: {', '.join(SPACES)})")
    ops = [list(UNIFORM_OPS[name]) for _ in range(num_edges(steps))]
    return DartsCellSpace(name, ops, [list(edge) for edge in ops], steps, RECIPES[name], none_rule)
