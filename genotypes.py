"""Genotypes: the `Genotype` type, the FP-DARTS primitives, published cells, validated load/save."""
from __future__ import annotations

import ast
import json
import os
from collections import namedtuple
from pathlib import Path

from plumbing import rundir
from plumbing.fileio import atomic_write

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

# The 7 FP-DARTS candidates in the authors' order (column index of the 14x7 architecture
# matrices). DARTS' 'none' is left out of the search space, as in the authors' code.
PRIMITIVES = [
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]

# Every op a genotype may name: the candidates, those of published DARTS-family cells and
# RobustDARTS S4's `noise`.
# Kept in sync with operations.OPS (a test checks it); listed here so this module imports nothing.
KNOWN_OPS = frozenset(PRIMITIVES) | {
    "none", "sep_conv_7x7", "conv_3x3", "conv_5x5", "conv_7x1_1x7", "noise",
}

NASNet = Genotype(
    normal=[("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
            ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
            ("sep_conv_3x3", 1), ("skip_connect", 1)],
    normal_concat=[2, 3, 4, 5, 6],
    reduce=[("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
            ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
            ("sep_conv_3x3", 2), ("max_pool_3x3", 1)],
    reduce_concat=[4, 5, 6],
)

AmoebaNet = Genotype(
    normal=[("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("avg_pool_3x3", 3), ("sep_conv_3x3", 1), ("skip_connect", 1),
            ("skip_connect", 0), ("avg_pool_3x3", 1)],
    normal_concat=[4, 5, 6],
    reduce=[("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
            ("sep_conv_7x7", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
            ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)],
    reduce_concat=[3, 4, 6],
)

DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)

DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)

PC_DARTS_cifar = Genotype(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    reduce_concat=[2, 3, 4, 5],
)

PC_DARTS_image = Genotype(
    normal=[("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
            ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)],
    reduce_concat=[2, 3, 4, 5],
)

PDARTS = Genotype(
    normal=[("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
            ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
    reduce_concat=[2, 3, 4, 5],
)

DARTS = DARTS_V2
PCDARTS = PC_DARTS_cifar

# The genotypes a name on the command line may refer to (looked up here, never with eval).
NAMED = {
    "NASNet": NASNet, "AmoebaNet": AmoebaNet, "DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2,
    "DARTS": DARTS, "PC_DARTS_cifar": PC_DARTS_cifar, "PC_DARTS_image": PC_DARTS_image,
    "PCDARTS": PCDARTS, "PDARTS": PDARTS,
}


class GenotypeError(ValueError):
    """A genotype that cannot be used; the message is one line naming the source and the problem."""


def is_restricted(genotype: Genotype) -> bool:
    """True for DARTS-style 2-tuple genes (op, src); False for 3-tuple genes (op, src, dst)."""
    return len(genotype.normal[0]) == 2


def cell_edges(genes: list) -> list[tuple[str, int, int]]:
    """Genes as (op, src, dst) triples; the k-th pair of a restricted cell feeds node 2 + k // 2."""
    if genes and len(genes[0]) == 3:
        return [(op, src, dst) for op, src, dst in genes]
    return [(op, src, 2 + k // 2) for k, (op, src) in enumerate(genes)]


def _validate_cell(genes: list, concat: list, kind: str, restricted: bool) -> str | None:
    """Return a description of the first problem of one cell, or None if it is well formed."""
    if not genes:
        return f"'{kind}' is an empty cell (no genes)"
    arity = 2 if restricted else 3
    for gene in genes:
        if len(gene) != arity:
            return f"'{kind}' mixes gene kinds: {list(gene)} is not a {arity}-tuple like the first"
        if gene[0] not in KNOWN_OPS:
            return f"'{kind}' names an unknown op '{gene[0]}' (known: {', '.join(sorted(KNOWN_OPS))})"
    if restricted and len(genes) % 2:
        return f"'{kind}' has {len(genes)} genes: a restricted cell needs exactly 2 per node"
    has_input = {0, 1}
    for op, src, dst in cell_edges(genes):
        if dst < 2:
            return f"'{kind}' gene ({op!r}, {src}, {dst}) targets input node {dst}"
        if not 0 <= src < dst:
            return f"'{kind}' gene for node {dst} reads source node {src}, which does not exist"
        if src not in has_input and not restricted:
            return f"'{kind}' gene ({op!r}, {src}, {dst}) reads node {src}, which has no inputs"
        has_input.add(dst)
    if not concat:
        return f"'{kind}_concat' is empty"
    missing = [n for n in concat if n not in has_input or n < 2]
    if missing:
        return f"'{kind}_concat' names node(s) {missing} that are not computed intermediate nodes"
    return None


def validate(genotype: Genotype, source: str = "genotype") -> Genotype:
    """Raise GenotypeError naming `source` unless both cells are well formed; return the genotype."""
    if not genotype.normal or not genotype.reduce:
        kind = "normal" if not genotype.normal else "reduce"
        raise GenotypeError(f"{source}: '{kind}' is an empty cell (no genes)")
    restricted = is_restricted(genotype)
    for kind in ("normal", "reduce"):
        problem = _validate_cell(getattr(genotype, kind), getattr(genotype, f"{kind}_concat"),
                                 kind, restricted)
        if problem:
            raise GenotypeError(f"{source}: {problem}")
    return genotype


def genotype_from_dict(fields: dict, source: str) -> Genotype:
    """Build and validate a Genotype from a dict of its four fields (lists or tuples)."""
    missing = [k for k in Genotype._fields if k not in fields]
    if missing:
        raise GenotypeError(f"{source}: missing field(s) {', '.join(missing)}")
    try:
        genotype = Genotype(
            normal=[tuple(g) for g in fields["normal"]],
            normal_concat=[int(n) for n in fields["normal_concat"]],
            reduce=[tuple(g) for g in fields["reduce"]],
            reduce_concat=[int(n) for n in fields["reduce_concat"]],
        )
        for gene in genotype.normal + genotype.reduce:
            if not isinstance(gene[0], str) or not all(isinstance(i, int) for i in gene[1:]):
                raise TypeError(f"gene {list(gene)} is not (op name, node index...)")
    except (TypeError, ValueError, IndexError) as e:
        raise GenotypeError(f"{source}: malformed genes or concat ({e})") from None
    return validate(genotype, source)


def _literal(node: ast.expr):
    """Evaluate a literal, allowing `range(a, b)` as printed by published genotypes."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "range":
        return list(range(*[ast.literal_eval(a) for a in node.args]))
    return ast.literal_eval(node)


def parse_genotype_string(text: str, source: str = "genotype string") -> Genotype:
    """Parse a `Genotype(normal=..., ...)` expression, as printed in logs, without eval."""
    start = text.find("Genotype(")
    if start < 0:
        raise GenotypeError(f"{source}: no 'Genotype(...)' expression found")
    depth, end = 0, None
    for i in range(start + len("Genotype"), len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            end = i + 1
            break
    if end is None:
        raise GenotypeError(f"{source}: unbalanced parentheses in 'Genotype(...)' (truncated?)")
    try:
        call = ast.parse(text[start:end], mode="eval").body
        fields = {kw.arg: _literal(kw.value) for kw in call.keywords}
        fields.update(zip(Genotype._fields, (_literal(a) for a in call.args)))
    except (SyntaxError, ValueError, TypeError) as e:
        raise GenotypeError(f"{source}: cannot parse 'Genotype(...)' ({e})") from None
    return genotype_from_dict(fields, source)


def load_genotype(spec: str | os.PathLike) -> Genotype:
    """Load a genotype from a name in this module, a JSON file, or a `Genotype(...)` string/file."""
    spec = str(spec)
    if spec in NAMED:
        return NAMED[spec]
    if spec.lstrip().startswith("Genotype("):
        return parse_genotype_string(spec)
    path = Path(spec)
    if not path.is_file():
        raise GenotypeError(
            f"{spec}: not a genotype name ({', '.join(NAMED)}) and no such file"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise GenotypeError(f"{spec}: cannot read genotype file ({e})") from None
    if not text.strip():
        raise GenotypeError(f"{spec}: the genotype file is empty")
    if "Genotype(" in text and not text.lstrip().startswith("{"):
        return parse_genotype_string(text, spec)
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenotypeError(f"{spec}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(fields, dict):
        raise GenotypeError(f"{spec}: expected a JSON object with the genotype fields")
    return genotype_from_dict(fields, spec)


def load_genotype_of(base_dir: str | os.PathLike, name: int | str) -> tuple[Genotype, Path]:
    """The DARTS genotype of epoch `name` of a search run directory (-1: the last), and its file."""
    path = rundir.epoch_file(base_dir, name)
    return load_genotype(path), path


def genotype_to_dict(genotype: Genotype) -> dict:
    """The JSON form: the four fields, genes as lists, concat as a list (the authors' layout)."""
    return {
        "normal": [list(g) for g in genotype.normal],
        "normal_concat": list(genotype.normal_concat),
        "reduce": [list(g) for g in genotype.reduce],
        "reduce_concat": list(genotype.reduce_concat),
    }


def save_genotype(genotype: Genotype, path: str | os.PathLike) -> None:
    """Write the genotype as JSON, atomically."""
    atomic_write(path, json.dumps(genotype_to_dict(genotype)) + "\n")
