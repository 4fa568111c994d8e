"""Draw the normal and reduce cells of a genotype with graphviz (PDF and PNG)."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

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


def plot_genotype(genotype: Genotype, out_prefix: str | Path) -> list[Path]:
    """Render `<out_prefix>_normal` and `<out_prefix>_reduce` as PDF and PNG; return the files."""
    if shutil.which("dot") is None:
        raise GraphvizMissing(INSTALL_HINT)
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in ("normal", "reduce"):
        graph = cell_graph(getattr(genotype, kind), getattr(genotype, f"{kind}_concat"), kind)
        stem = out_prefix.parent / f"{out_prefix.name}_{kind}"
        for fmt in ("pdf", "png"):
            written.append(Path(graph.render(filename=stem.name, directory=stem.parent,
                                             format=fmt, cleanup=True)))
    return written


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of visualize.py."""
    parser = argparse.ArgumentParser(
        description="Draw the cells of a genotype (a name in genotypes.py, a JSON genotype "
                    "file, or a Genotype(...) string).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("genotype", help="genotype name, genotype file path, or Genotype(...) text")
    parser.add_argument("--out_dir", default=".", help="folder the drawings are written to")
    parser.add_argument("--name", default=None,
                        help="file name prefix (default: the genotype name or file stem)")
    return parser


def main(argv: list[str] | None = None) -> list[Path]:
    """Load the genotype, draw both cells, print the written paths."""
    args = build_parser().parse_args(argv)
    try:
        genotype = load_genotype(args.genotype)
        name = args.name or (Path(args.genotype).stem if Path(args.genotype).is_file()
                             else args.genotype if args.genotype.isidentifier() else "genotype")
        written = plot_genotype(genotype, Path(args.out_dir) / name)
    except (GenotypeError, GraphvizMissing) as e:
        sys.exit(f"error: {e}")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
