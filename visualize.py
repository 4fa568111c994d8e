"""Draw the normal and reduce cells of a genotype, or a NAS-Bench-201 cell, with graphviz (PDF and
PNG)."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from architectures import NB201_ENDPOINTS, ArchFormat, nb201_from_dict, parse_nb201_arch
from genotypes import Genotype, GenotypeError, cell_edges, load_genotype

INSTALL_HINT = (
    "graphviz's 'dot' program was not found on PATH; install it with "
    "'apt-get install graphviz' (Debian/Ubuntu), 'brew install graphviz' (macOS) "
    "or 'conda install graphviz', then run again"
)


class GraphvizMissing(RuntimeError):
    """The `dot` executable is not installed."""


def _node_label(node: int) -> str:
    """c_{k-2}, c_{k-1} for the inputs; 0, 1, ... for intermediate nodes."""
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(node, str(node - 2))


def cell_graph(genes: list, concat: list, title: str):
    """A graphviz Digraph of one cell: inputs, intermediate nodes, op-labelled edges, output."""
    import graphviz

    g = graphviz.Digraph(
        name=title,
        format="pdf",
        edge_attr=dict(fontsize="20", fontname="times"),
        node_attr=dict(style="filled", shape="rect", align="center", fontsize="20",
                       height="0.5", width="0.5", penwidth="2", fontname="times"),
        engine="dot",
    )
    g.body.extend(["rankdir=LR"])
    for node in (0, 1):
        g.node(_node_label(node), fillcolor="darkseagreen2")
    edges = cell_edges(genes)
    for node in sorted({dst for _, _, dst in edges}):
        g.node(_node_label(node), fillcolor="lightblue")
    for op, src, dst in edges:
        g.edge(_node_label(src), _node_label(dst), label=op, fillcolor="gray")
    g.node("c_{k}", fillcolor="palegoldenrod")
    for node in concat:
        g.edge(_node_label(node), "c_{k}", fillcolor="gray")
    return g


def nb201_graph(arch_str: str, title: str = "cell"):
    """A graphviz Digraph of a NAS-Bench-201 cell: input node 0, nodes 1 and 2, output node 3;
    `none` edges carry nothing and are not drawn."""
    import graphviz

    g = graphviz.Digraph(name=title, format="pdf", engine="dot",
                         edge_attr=dict(fontsize="20", fontname="times"),
                         node_attr=dict(style="filled", shape="rect", align="center", fontsize="20",
                                        height="0.5", width="0.5", penwidth="2", fontname="times"))
    g.body.extend(["rankdir=LR"])
    colours = {0: "darkseagreen2", 1: "lightblue", 2: "lightblue", 3: "palegoldenrod"}
    labels = {0: "in", 1: "1", 2: "2", 3: "out"}
    for node, colour in colours.items():
        g.node(labels[node], fillcolor=colour)
    for op, (src, dst) in zip(parse_nb201_arch(arch_str, title), NB201_ENDPOINTS):
        if op != "none":
            g.edge(labels[src], labels[dst], label=op, fillcolor="gray")
    return g


def _render(graphs: dict, out_prefix: str | Path) -> list[Path]:
    """Render each graph as `<out_prefix>_<name>` PDF and PNG; return the files."""
    if shutil.which("dot") is None:
        raise GraphvizMissing(INSTALL_HINT)
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for name, graph in graphs.items():
        stem = out_prefix.parent / f"{out_prefix.name}_{name}"
        for fmt in ("pdf", "png"):
            written.append(Path(graph.render(filename=stem.name, directory=stem.parent,
                                             format=fmt, cleanup=True)))
    return written


def plot_genotype(genotype: Genotype, out_prefix: str | Path) -> list[Path]:
    """Render `<out_prefix>_normal` and `<out_prefix>_reduce` as PDF and PNG; return the files."""
    return _render({kind: cell_graph(getattr(genotype, kind), getattr(genotype, f"{kind}_concat"), kind)
                    for kind in ("normal", "reduce")}, out_prefix)


def plot_nb201(arch_str: str, out_prefix: str | Path) -> list[Path]:
    """Render a NAS-Bench-201 cell as `<out_prefix>_cell` PDF and PNG; return the files."""
    return _render({"cell": nb201_graph(arch_str)}, out_prefix)


# The drawing of each architecture format (architectures.py), by its kind.
DRAWERS = {"genotype": plot_genotype, "nb201": plot_nb201}


def draw(fmt: ArchFormat, arch, out_prefix: str | Path) -> list[Path]:
    """Draw an architecture of format `fmt` as `<out_prefix>_<cell>` PDF and PNG files."""
    return DRAWERS[fmt.kind](arch, out_prefix)


def draw_or_warn(fmt: ArchFormat, arch, out_prefix: str | Path, warn: Callable[[str], object],
                 source: str = "<genotype>") -> list[Path]:
    """`draw`, where a missing drawer (the graphviz module, its `dot` program) or a failing drawing
    costs one warning line, never the run (its results are written or still to come):
    `python visualize.py source` draws the cells later."""
    try:
        return draw(fmt, arch, out_prefix)
    except Exception as e:  # (ImportError, GraphvizMissing, graphviz's own errors, OSError, ...)
        warn(f"no drawing of the cells ({type(e).__name__}: {e}); draw them later: "
             f"python visualize.py {source} --out_dir {Path(out_prefix).parent}")
        return []


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of visualize.py."""
    parser = argparse.ArgumentParser(
        description="Draw the cells of a genotype (a name in genotypes.py, a JSON genotype "
                    "file, or a Genotype(...) string) or a NAS-Bench-201 cell (its architecture "
                    "string, or a JSON file with an 'arch_str').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("genotype",
                        help="genotype name, genotype file path, Genotype(...) text, "
                             "or NAS-Bench-201 architecture string or file")
    parser.add_argument("--out_dir", default=".", help="folder the drawings are written to")
    parser.add_argument("--name", default=None,
                        help="file name prefix (default: the genotype name or file stem)")
    return parser


def main(argv: list[str] | None = None) -> list[Path]:
    """Load the genotype (or NAS-Bench-201 cell), draw its cells, print the written paths."""
    args = build_parser().parse_args(argv)
    spec, is_file = args.genotype, Path(args.genotype).is_file()
    try:
        name = args.name or (Path(spec).stem if is_file else spec if spec.isidentifier() else "genotype")
        nb201 = _nb201_arch(spec, is_file)
        if nb201 is not None:
            written = plot_nb201(nb201, Path(args.out_dir) / name)
        else:
            written = plot_genotype(load_genotype(spec), Path(args.out_dir) / name)
    except (GenotypeError, GraphvizMissing) as e:
        sys.exit(f"error: {e}")
    for path in written:
        print(path)
    return written


def _nb201_arch(spec: str, is_file: bool) -> str | None:
    """The NAS-Bench-201 architecture string `spec` names (itself, or a JSON file holding an
    'arch_str'), or None when `spec` is a DARTS genotype."""
    if is_file:
        try:
            fields = json.loads(Path(spec).read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return None  # not JSON: a genotype file of another form (load_genotype says what is wrong)
        return nb201_from_dict(fields, spec) if isinstance(fields, dict) and "arch_str" in fields else None
    if spec.lstrip().startswith("|"):
        parse_nb201_arch(spec, "architecture string")
        return spec.strip()
    return None


if __name__ == "__main__":
    main()
