"""The two kinds of architecture a search finds, as data: DARTS genotypes and NAS-Bench-201
architecture strings (the benchmark's key, `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`). How each is
written as JSON, read back and validated, and named in a run directory. No drawing here
(`visualize.py`) and no search space (`search_spaces.py`): both import this module."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genotypes import GenotypeError, genotype_from_dict, genotype_to_dict

NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]

NB201_ENDPOINTS = [(j, i) for i in range(1, 4) for j in range(i)]  # (0,1) (0,2) (1,2) (0,3) ...


def nb201_arch_str(ops: list[str]) -> str:
    """The benchmark's key of a cell from its 6 edge ops in edge order:
    `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (node 1's input, node 2's, node 3's)."""
    nodes = [[f"{op}~{src}" for op, (src, dst) in zip(ops, NB201_ENDPOINTS) if dst == node]
             for node in (1, 2, 3)]
    return "+".join("|" + "|".join(inputs) + "|" for inputs in nodes)


def parse_nb201_arch(text: str, source: str = "--arch_str") -> list[str]:
    """The 6 edge ops (edge order) of an architecture string; GenotypeError naming `source`."""
    nodes = text.strip().split("+")
    ops = []
    try:
        if len(nodes) != 3:
            raise ValueError(f"{len(nodes)} nodes separated by '+', expected 3")
        for node, part in enumerate(nodes, start=1):
            inputs = part.strip("|").split("|")
            if not part.startswith("|") or not part.endswith("|") or len(inputs) != node:
                raise ValueError(f"node {node} must read |op~0|...|op~{node - 1}|, got '{part}'")
            for src, item in enumerate(inputs):
                op, _, index = item.partition("~")
                if index != str(src) or op not in NB201_OPS:
                    raise ValueError(f"'{item}' is not op~{src} with op in {', '.join(NB201_OPS)}")
                ops.append(op)
    except ValueError as e:
        raise GenotypeError(f"{source}: not a NAS-Bench-201 architecture string ({e})") from None
    return ops


def nb201_from_dict(fields: dict, source: str) -> str:
    """A NAS-Bench-201 architecture from its JSON form {"arch_str": ...}, validated."""
    if not isinstance(fields, dict) or not isinstance(fields.get("arch_str"), str):
        raise GenotypeError(f"{source}: expected a JSON object with an 'arch_str' string")
    text = fields["arch_str"]
    parse_nb201_arch(text, source)
    return text


def read_arch_json(path: str | Path, from_dict) -> object:
    """Read one architecture JSON file with `from_dict`; GenotypeError naming the file."""
    try:
        fields = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GenotypeError(f"{path}: cannot read the architecture file ({e})") from None
    return from_dict(fields, str(path))


@dataclass(frozen=True)
class ArchFormat:
    """How one kind of architecture is written (JSON) and read back, and the short name an
    evaluation run directory takes from the architecture's source label (`visualize.draw` draws
    either kind)."""
    kind: str
    to_dict: Callable
    from_dict: Callable
    short_name: Callable = lambda label: Path(label).stem


_NB201_SHORT = {"none": "N", "skip_connect": "S", "nor_conv_1x1": "C1", "nor_conv_3x3": "C3", "avg_pool_3x3": "P"}


def _nb201_short_name(label: str) -> str:
    """An architecture string as its ops per node, e.g. C3-C3P-SC3S; a file label as its stem."""
    if not label.lstrip().startswith("|"):
        return Path(label).stem
    ops = parse_nb201_arch(label)
    return "-".join("".join(_NB201_SHORT[ops[e]] for e, (_, dst) in enumerate(NB201_ENDPOINTS) if dst == node)
                    for node in (1, 2, 3))


GENOTYPE_FORMAT = ArchFormat("genotype", genotype_to_dict, genotype_from_dict)
NB201_FORMAT = ArchFormat("nb201", lambda arch: {"arch_str": arch}, nb201_from_dict, _nb201_short_name)


def load_architecture(path: str | Path) -> tuple[ArchFormat, object]:
    """(format, architecture) of an architecture JSON file of either kind, told apart by its keys."""
    try:
        fields = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GenotypeError(f"{path}: cannot read the architecture file ({e})") from None
    fmt = NB201_FORMAT if isinstance(fields, dict) and "arch_str" in fields else GENOTYPE_FORMAT
    return fmt, fmt.from_dict(fields, str(path))
