"""Figures of a search, read from its run directory alone (a finished or a running search): the
mixing weights, the prune timeline, the validation curves, the saliency of every event, the
saliency audit, and a one-page summary with the cells' drawings. matplotlib, headless."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plumbing import rundir
from plumbing.cli import UserError
from plumbing.fileio import atomic_write, read_jsonl

# Op families of the timeline, by name prefix (the DARTS, RobustDARTS and NAS-Bench-201 ops).
FAMILIES = {"conv": ("sep_conv", "dil_conv", "nor_conv", "conv"), "pool": ("max_pool", "avg_pool"),
            "skip": ("skip_connect",), "none": ("none",), "noise": ("noise",)}
COLOURS = {"conv": "tab:blue", "pool": "tab:orange", "skip": "tab:green", "none": "tab:gray",
           "noise": "tab:purple", "other": "tab:brown"}
RULE_STYLE = {"s1": ("tab:blue", "s1"), "s2": ("tab:red", "s2 (coef. 1)"), "s2_half": ("tab:green", "s2 (coef. 0.5)")}


def family(op: str) -> str:
    """The family of an op name (conv, pool, skip, none, noise; other)."""
    return next((f for f, prefixes in FAMILIES.items() if op.startswith(prefixes)), "other")


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


@dataclass
class Run:
    """A search as its figures show it, read from its run directory by `load_run`."""
    dir: Path
    args: dict  # args.json: the search's flags
    space: dict  # search_space.json: the space's name, cell types and labels, edges, candidates per edge
    types: list[str]  # the cell types
    labels: dict[str, str]  # each cell type as people call it ("reduction cell")
    epochs: list[int]  # the finished epochs (those with mixing weights), in order
    betas: dict[int, dict[str, np.ndarray]]  # epoch: cell type: mixing weights (edges, candidates)
    rows: list[dict]  # results.csv: epoch, val_loss, val_acc
    events: list[dict]  # prune_events.jsonl; `x` added to each of these three: when, in epochs
    saliency: list[dict]  # saliency.jsonl: every op's saliency at each event
    audit: list[dict]  # audit.jsonl (--audit_every)
    results: dict | None  # results.json; None while the search runs


def load_run(run_dir: str | Path) -> Run:
    """Everything the figures show, from a search's run directory; one-line UserError when it is
    missing, not a search's, or has no finished epoch yet."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UserError(f"{d}: no such run directory")
    for name in (rundir.ARGS, rundir.SEARCH_SPACE):
        if not (d / name).is_file():
            raise UserError(f"{d}: not a search run directory (no {name})")
    args, space = _json(d / rundir.ARGS), _json(d / rundir.SEARCH_SPACE)
    epochs = rundir.epochs(d, "alpha")
    if not epochs:
        raise UserError(f"{d}: no finished epoch yet ({rundir.epoch_path(d, 'alpha', 0).parent} is empty); "
                        "plot again after the first epoch")
    types = space["cell_types"]
    alphas = {e: _json(rundir.epoch_path(d, "alpha", e)) for e in epochs}
    betas = {e: {t: np.array(a[f"alphas_{t}"]) for t in types} for e, a in alphas.items()}
    names = rundir.PRUNE_EVENTS, rundir.SALIENCY, rundir.AUDIT
    try:
        events, saliency, audit = (read_jsonl(d / name) for name in names)
    except ValueError as e:  # (a bad line before the last)
        raise UserError(str(e)) from None
    for r in (*events, *saliency, *audit):  # in epochs (an event writes its saliency.jsonl line first)
        r["x"] = r["epoch"] + (r["step"] + 1) / saliency[0]["steps_per_epoch"]
    return Run(dir=d, args=args, space=space, types=types, labels=space["cell_labels"], epochs=epochs,
               betas=betas, rows=_rows(rundir.results_csv(d)), events=events, saliency=saliency, audit=audit,
               results=_json(d / rundir.RESULTS) if (d / rundir.RESULTS).is_file() else None)


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        return [{"epoch": int(r["epoch"]), "val_loss": float(r["val_loss"]), "val_acc": float(r["val_acc"])}
                for r in csv.DictReader(f)]


def masks_at(run: Run, epoch: float) -> dict[str, np.ndarray]:
    """The keep-masks (edges, n_ops) per cell type after every event up to `epoch` (inclusive:
    the mixing weights of an epoch are written after its events)."""
    masks = {t: np.ones(np.shape(run.space["edge_ops"][t]), dtype=bool) for t in run.types}
    for e in run.events:
        if e["epoch"] <= epoch:
            masks[e["cell"]][e["edge"], run.space["edge_ops"][e["cell"]][e["edge"]].index(e["op"])] = False
    return masks


def snapshot_epochs(run: Run, count: int = 4) -> list[int]:
    """The epochs the heatmaps show: the warm-up's end, evenly spaced ones, the last."""
    warm = min(max(run.args["warmup"] - 1, 0), run.epochs[-1])
    wanted = np.linspace(warm, run.epochs[-1], count).round().astype(int)
    return sorted({min(run.epochs, key=lambda e: abs(e - w)) for w in wanted})


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def beta_range(run: Run, epochs: list[int]) -> tuple[float, float]:
    """The colour scale of the heatmaps: the live weights' range over `epochs` (β often stays
    close to uniform, and a scale from 0 would show no structure)."""
    live = [run.betas[e][t][masks_at(run, e)[t]] for e in epochs for t in run.types]
    lo, hi = min(float(v.min()) for v in live if v.size), max(float(v.max()) for v in live if v.size)
    return lo, max(hi, lo + 1e-6)


def draw_betas(ax, run: Run, cell: str, epoch: int, scale: tuple[float, float], labels: bool = True):
    """One heatmap: edges x ops of `cell` at `epoch`, pruned entries masked (grey, ×)."""
    ops = run.space["edge_ops"][cell]
    data = np.ma.masked_array(run.betas[epoch][cell], mask=~masks_at(run, epoch)[cell])
    ax.set_facecolor("0.85")
    image = ax.imshow(data, cmap="viridis", vmin=scale[0], vmax=scale[1], aspect="auto", interpolation="nearest")
    ax.set_title(f"{run.labels[cell]}, epoch {epoch}", fontsize=9)
    edges = [f"{s}→{d}" for s, d in run.space["edges"]]
    ax.set_yticks(range(len(edges)), edges, fontsize=7)
    ax.tick_params(labelleft=labels)
    uniform = all(edge == ops[0] for edge in ops)
    ax.set_xticks(range(len(ops[0])), ops[0] if uniform else [], rotation=60, ha="right", fontsize=7)
    if not uniform:  # every edge has its own candidates (RobustDARTS S1): name them in place
        for i, edge in enumerate(ops):
            for j, op in enumerate(edge):
                ax.text(j, i, op.replace("_conv", "").replace("_", " "), ha="center", va="center", fontsize=5,
                        color="w")
    rows, cols = np.nonzero(data.mask)
    ax.scatter(cols, rows, marker="x", s=14, color="0.45", linewidths=0.8)
    return image


def fig_betas(run: Run):
    """The mixing weights of every cell type at the snapshot epochs."""
    plt = _plt()
    epochs = snapshot_epochs(run)
    scale = beta_range(run, epochs)
    fig, axes = plt.subplots(len(run.types), len(epochs), squeeze=False, layout="constrained",
                             figsize=(2.3 * len(epochs) + 1.5, 3.2 * len(run.types)))
    for r, cell in enumerate(run.types):
        for c, epoch in enumerate(epochs):
            image = draw_betas(axes[r, c], run, cell, epoch, scale, labels=c == 0)
    fig.colorbar(image, ax=axes, label="β = softmax(α)  (× = pruned)", shrink=0.8)
    fig.suptitle("Mixing weights β (warm-up end → last epoch)")
    return fig


def live_by_family(run: Run, cell: str) -> tuple[list[float], dict[str, list[int]]]:
    """x positions (epochs: start, then every event of `cell`) and the live ops of every family."""
    ops = [op for edge in run.space["edge_ops"][cell] for op in edge]
    counts = {f: sum(family(op) == f for op in ops) for f in [*FAMILIES, "other"]}
    counts = {f: [n] for f, n in counts.items() if n}
    xs = [0.0]
    for e in (e for e in run.events if e["cell"] == cell):
        xs.append(e["x"])
        for f in counts:
            counts[f].append(counts[f][-1] - (family(e["op"]) == f))
    return xs, counts


def draw_timeline(ax, run: Run, cell: str, legend: bool = True) -> None:
    """Live ops of `cell` by family (stacked area), each event marked with the family it pruned."""
    xs, counts = live_by_family(run, cell)
    end = max(run.epochs[-1] + 1, xs[-1])
    ax.stackplot([*xs, end], *[[*c, c[-1]] for c in counts.values()], step="post", alpha=0.35,
                 colors=[COLOURS[f] for f in counts], labels=list(counts))
    total = np.sum(list(counts.values()), axis=0)
    ax.step([*xs, end], [*total, total[-1]], where="post", color="k", lw=1)
    ours = [e for e in run.events if e["cell"] == cell]
    ax.scatter([e["x"] for e in ours], total[1:], c=[COLOURS[family(e["op"])] for e in ours], s=14,
               edgecolors="k", linewidths=0.4, zorder=3, gid="prune markers")
    ax.set(title=f"{run.labels[cell]}: live ops", xlabel="epoch", ylabel="live ops", xlim=(0, end), ylim=(0, None))
    if legend:
        ax.legend(loc="upper right", fontsize=7, title="family (marker: op pruned)", title_fontsize=7)


def fig_timeline(run: Run):
    """The prune timeline of every cell type."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(run.types), squeeze=False, layout="constrained",
                             figsize=(5.5 * len(run.types), 3.6))
    for ax, cell in zip(axes[0], run.types):
        draw_timeline(ax, run, cell)
    return fig


def draw_validation(ax, run: Run) -> None:
    """Supernet validation accuracy (left axis) and loss (right) per epoch, the prune phase shaded."""
    epochs = [r["epoch"] + 1 for r in run.rows]  # an epoch's figures are measured at its end
    ax.plot(epochs, [r["val_acc"] for r in run.rows], "o-", color="tab:blue", ms=3, label="accuracy")
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
    twin = ax.twinx()
    twin.plot(epochs, [r["val_loss"] for r in run.rows], "s--", color="tab:red", ms=3, label="loss")
    twin.set_ylabel("validation loss")
    if run.events:  # the prune phase, from the first event to the last
        ax.axvspan(run.events[0]["x"], run.events[-1]["x"], color="0.9", zorder=0, label="pruning")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.set_title("supernet on the search split", pad=18)
    ax.legend(handles=handles, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)


def fig_validation(run: Run):
    """The validation curves of the supernet."""
    plt = _plt()
    fig, ax = plt.subplots(layout="constrained", figsize=(6, 3.6))
    draw_validation(ax, run)
    return fig


def fig_saliency(run: Run):
    """Per event and cell type: |S| of the live ops (grey) and of the op pruned (red); with
    compared candidates (s1r), their measured validation losses and the one chosen."""
    plt = _plt()
    compared = any(e["loss"] is not None for e in run.events)
    fig, axes = plt.subplots(1 + compared, len(run.types), squeeze=False, layout="constrained",
                             figsize=(5.5 * len(run.types), 3.4 * (1 + compared)))
    for c, (cell, ax) in enumerate(zip(run.types, axes[0])):
        for s in run.saliency:
            values = np.abs(np.array(s["saliency"][cell]))[np.array(s["live"][cell], dtype=bool)]
            ax.scatter(np.full(len(values), s["x"]), np.maximum(values, 1e-12), s=4, color="0.55", alpha=0.5, lw=0)
        ours = [e for e in run.events if e["cell"] == cell]
        ax.scatter([e["x"] for e in ours], [max(abs(e["saliency"]), 1e-12) for e in ours], s=12, color="tab:red",
                   label="pruned", zorder=3)
        ax.set(yscale="log", xlabel="epoch", ylabel="|saliency| (zero drawn at 1e-12)",
               title=f"{run.labels[cell]}: live ops' |S| at each event")
        ax.legend(fontsize=7)
        if compared:
            _draw_candidates(axes[1, c], ours, run.labels[cell])
    return fig


def _draw_candidates(ax, events: list[dict], label: str) -> None:
    for e in events:
        losses = [k["loss"] for k in e["candidates"]]
        ax.scatter([e["x"]] * len(losses), losses, s=8, color="0.55")
        ax.scatter([e["x"]], [e["loss"]], s=14, color="tab:red", zorder=3)
    ax.scatter([], [], s=8, color="0.55", label="candidate")
    ax.scatter([], [], s=14, color="tab:red", label="pruned (lowest loss)")
    ax.set(xlabel="epoch", ylabel="validation loss without the op", title=f"{label}: candidates compared")
    ax.legend(fontsize=7)


def fig_audit(run: Run):
    """The saliency audit over the search: each rule's rank correlation with the true change of
    the loss (signed: solid; magnitudes: dashed) and the true rank of the op it would prune."""
    plt = _plt()
    fig, axes = plt.subplots(2, len(run.types), squeeze=False, layout="constrained", sharex=True,
                             figsize=(5.5 * len(run.types), 6.4))
    for cell, top, bottom in zip(run.types, axes[0], axes[1]):
        records = [r for r in run.audit if r["cell"] == cell]
        xs = [r["x"] for r in records]
        for rule, (colour, label) in RULE_STYLE.items():
            top.plot(xs, [r[rule]["spearman"] for r in records], "o-", color=colour, ms=3, label=f"{label}, S")
            top.plot(xs, [r[rule]["spearman_abs"] for r in records], "o--", color=colour, ms=3, label=f"{label}, |S|")
            bottom.plot(xs, [r[rule]["true_rank"] / r["eligible"] for r in records], "o-", color=colour, ms=3,
                        label=label)
        pruned = [(r["x"], r["pruned_true_rank"] / r["eligible"]) for r in records if "pruned_true_rank" in r]
        if pruned:
            bottom.plot(*zip(*pruned), "kx", label="op pruned")
        top.set(ylim=(-1.05, 1.05), ylabel="Spearman with the true change", title=f"{run.labels[cell]}: saliency audit")
        bottom.set(ylim=(0, 1.05), xlabel="epoch", ylabel="true rank / eligible ops\n(0: least harmful)")
        top.legend(fontsize=6, ncol=2)
        bottom.legend(fontsize=6)
    return fig


def drawings(run: Run, out: Path) -> dict[str, Path | str]:
    """{cell type: PNG} of the final cells (the search's drawings), or for a running search of the
    last epoch's cell (drawn into `out`); a reason instead of a path when there is none."""
    from architectures import load_architecture
    from genotypes import GenotypeError
    from visualize import GraphvizMissing, draw

    found = {t: run.dir / f"{rundir.DRAWING}_{t}.png" for t in run.types}
    if run.results and all(p.is_file() for p in found.values()):
        return found
    last = rundir.epoch_path(run.dir, "genotype", run.epochs[-1])
    try:
        draw(*load_architecture(last), out / "current")
    except (ImportError, GraphvizMissing, GenotypeError, UserError, OSError, KeyError) as e:
        return {t: f"no drawing: {e}" for t in run.types}
    return {t: out / f"current_{t}.png" for t in run.types}


def draw_image(ax, image: Path | str, title: str) -> None:
    """A PNG (a cell's drawing) without axes, or the reason there is none."""
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    if isinstance(image, Path):
        ax.imshow(_plt().imread(image))
    else:
        ax.text(0.5, 0.5, image, ha="center", va="center", wrap=True, fontsize=8)


def status(run: Run) -> str:
    """One line: the variant, data, seed, and how far the search got."""
    a = run.args
    name = run.results["variant"] if run.results else f"search ({a['sal_type']})"
    head = f"{name}, {run.space['name']} space, {a['dataset']}, seed {a['seed']}"
    if run.results:
        return f"{head}: finished, supernet validation accuracy {run.results['final_valid_top1']:.2f}%"
    return f"{head}: running, {len(run.epochs)} of {a['epochs']} epochs done"


def fig_summary(run: Run, out: Path):
    """One page for a report: the cells found, the validation curves, the prune timeline of every
    cell type and the final mixing weights."""
    plt = _plt()
    n = len(run.types)
    fig = plt.figure(figsize=(14, 12), layout="constrained")
    rows = fig.add_gridspec(3, 1, height_ratios=[0.42, 1.0, 1.0])
    state = "final" if run.results else f"epoch {run.epochs[-1]}"
    top, middle, bottom = (rows[i].subgridspec(1, k) for i, k in enumerate((n, n + 1, n)))
    for i, (cell, image) in enumerate(drawings(run, out).items()):
        draw_image(fig.add_subplot(top[0, i]), image, f"{run.labels[cell]} ({state})")
    draw_validation(fig.add_subplot(middle[0, 0]), run)
    for i, cell in enumerate(run.types):
        draw_timeline(fig.add_subplot(middle[0, i + 1]), run, cell, legend=i == n - 1)
    scale = beta_range(run, run.epochs[-1:])
    for i, cell in enumerate(run.types):
        image = draw_betas(fig.add_subplot(bottom[0, i]), run, cell, run.epochs[-1], scale)
    fig.colorbar(image, ax=fig.axes[-1], label="β (× = pruned)", shrink=0.9)
    fig.suptitle(status(run), fontsize=12)
    return fig


def save(fig, path: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write `fig` as `path` with each suffix in `formats`; close it; return the files."""
    written = []
    for fmt in formats:
        data = io.BytesIO()
        fig.savefig(data, dpi=110, format=fmt)
        atomic_write(path.with_suffix(f".{fmt}"), data.getvalue())  # a reader never sees half a figure
        written.append(path.with_suffix(f".{fmt}"))
    _plt().close(fig)
    return written


def write_summary(run_dir: str | Path, out: str | Path | None = None,
                  formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """The summary figure of a run in `formats` (into the run directory by default)."""
    run = load_run(run_dir)
    out = Path(out) if out else run.dir
    return save(fig_summary(run, out), out / rundir.SUMMARY, formats)


def write_all(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Every figure of a run as PNG and PDF (into RUN_DIR/plots by default); the saliency figure
    once there is a prune event, the audit's when the search ran one."""
    run = load_run(run_dir)
    out = Path(out) if out else run.dir / rundir.PLOTS
    figures = {"betas": fig_betas, "timeline": fig_timeline, "validation": fig_validation}
    if run.saliency:
        figures["saliency"] = fig_saliency
    if run.audit:
        figures["audit"] = fig_audit
    written = [p for name, make in figures.items() for p in save(make(run), out / name)]
    return written + save(fig_summary(run, out), out / rundir.SUMMARY)


def fig_results(rows: list[dict], dataset: str, published: dict[str, tuple[float, float]]):
    """A results table as a picture: test top-1 against parameters and against search cost, one
    point per variant with mean ± std error bars over seeds, the published figures as hollow
    stars (`published`: {variant: (top-1 %, params M)})."""
    plt = _plt()
    costed = any(r.get("search_gpu_hours_mean") is not None for r in rows)
    fig, axes = plt.subplots(1, 1 + costed, squeeze=False, layout="constrained", sharey=True,
                             figsize=(5.5 * (1 + costed), 4.2))
    colours = dict(zip(sorted({r["variant"] for r in rows} | set(published)), plt.get_cmap("tab10").colors * 3))
    for ax, key, label in zip(axes[0], ("params_M", "search_gpu_hours"), ("parameters (M)", "search cost (GPU-hours)")):
        for r in rows:
            x, y = r.get(f"{key}_mean"), r.get("test_top1_mean")
            if x is None or y is None:
                continue
            ax.errorbar(x, y, xerr=r.get(f"{key}_std") or 0, yerr=r.get("test_top1_std") or 0, fmt="o", capsize=3,
                        color=colours[r["variant"]], label=f"{r['variant']} (n={r['n']})")
        if key == "params_M":
            for variant, (top1, params) in published.items():
                ax.scatter(params, top1, marker="*", s=120, facecolors="none", edgecolors=colours[variant],
                           label=f"{variant}, paper", gid="paper")
        ax.set(xlabel=label, title=f"{dataset}: test top-1 against {label.split(' (')[0]}")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test top-1 (%)")
    axes[0, 0].legend(fontsize=7)
    return fig
