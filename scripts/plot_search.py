"""Draw what a search did, from its run directory alone (a finished search, or one still running):
the mixing weights β as edge x op heatmaps from the warm-up's end to the last epoch
(betas), the live ops of every cell by op family with each prune event marked (timeline), the
supernet's validation accuracy and loss with the prune phase shaded (validation), every event's
live-op saliencies against the op pruned, and for s1r the candidates' measured losses (saliency),
the saliency audit of a search run with --audit_every (audit), and a one-page summary with the
cells' drawings (summary). Each as PNG and PDF.

Usage: `python scripts/plot_search.py RUN_DIR [--out DIR]` (default DIR: RUN_DIR/plots).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plumbing.cli import ArgumentParser, run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a search's run directory (search-<save>-<time>-task<k>)")
    p.add_argument("--out", default=None, help="folder the figures go to (default: RUN_DIR/plots)")
    p.add_argument("--summary_only", action="store_true", help="only the one-page summary (summary.png/.pdf)")
    return p


def main(argv: list[str] | None = None) -> list[Path]:
    """Write the figures; print and return their paths."""
    from plumbing.drivers import plots  # (matplotlib: after the flags are checked)

    args = build_parser().parse_args(argv)
    if args.summary_only:
        written = plots.write_summary(args.run_dir, args.out or Path(args.run_dir) / "plots")
    else:
        written = plots.write_all(args.run_dir, args.out)
    sys.stdout.writelines(f"{path}\n" for path in written)  # the command's output
    return written


if __name__ == "__main__":
    run_cli(main)
