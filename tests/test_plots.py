"""Pictures of a search: scripts/plot_search.py and the search's summary figure drawn from real
searches through their whole prune schedule (restricted s1 with a saliency audit; s1r in the
larger space), the data behind every figure checked against the run directory; a running search;
one-line errors; the saliency audit's numbers; TensorBoard's images and histograms."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import audit
import saliency
from conftest import run_cli
from model_search import supernet
from plumbing.drivers import plots
from search_spaces import get_space


def check_figure_files(paths):
    """Every file is a whole PNG or PDF of a sensible size."""
    assert paths
    for path in paths:
        data = Path(path).read_bytes()
        assert len(data) > 5000, path
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82"), path
        else:
            assert path.suffix == ".pdf" and data.startswith(b"%PDF-") and b"%%EOF" in data[-64:], path


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_plot_search_draws_every_figure(complete_searches, tmp_path):
    # (the s1r search's figures are drawn in memory below; one CLI run covers the files)
    run_dir = complete_searches("s1")
    check_figure_files([run_dir / "summary.png"])  # written by the search
    assert "summary figure: " in (run_dir / "log.txt").read_text()
    result = run_cli("scripts/plot_search.py", run_dir, "--out", tmp_path)
    written = [Path(p) for p in result.stdout.split()]
    figures = {"betas", "timeline", "validation", "saliency", "summary", "audit"}
    assert sorted(p.name for p in written) == sorted(f"{f}.{x}" for f in figures for x in ("png", "pdf"))
    check_figure_files(written)


def image_of(ax):
    (image,) = ax.get_images()
    return image.get_array()


@pytest.mark.parametrize("kind", ["s1", "s1r-larger"])
def test_figures_show_what_the_run_directory_holds(complete_searches, kind):
    run_dir = complete_searches(kind)
    run, events = plots.load_run(run_dir), lines(run_dir / "prune_events.jsonl")
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]
    last = json.loads((run_dir / "results_of_7q" / "alpha" / "17.txt").read_text())

    fig = plots.fig_betas(run)  # the last column: the final masks and mixing weights
    assert plots.snapshot_epochs(run)[0] == 0 and plots.snapshot_epochs(run)[-1] == 17
    for ax, cell in zip(fig.axes[len(plots.snapshot_epochs(run)) - 1::len(plots.snapshot_epochs(run))], run.types):
        data = image_of(ax)
        assert ax.get_title() == f"{run.labels[cell]}, epoch 17"
        np.testing.assert_array_equal(~data.mask, state[f"keep_{cell}"].numpy())
        np.testing.assert_array_equal(data.data, np.array(last[f"alphas_{cell}"]))

    fig = plots.fig_timeline(run)  # a marker per event, at the live ops it left
    for ax, cell in zip(fig.axes, run.types):
        (markers,) = [c for c in ax.collections if c.get_gid() == "prune markers"]
        ours = [e for e in events if e["cell"] == cell]
        assert len(markers.get_offsets()) == len(ours) == 31
        np.testing.assert_array_equal(markers.get_offsets()[:, 1], [e["live_ops"][run.types.index(cell)] for e in ours])

    (ax, _) = plots.fig_validation(run).axes
    rows = (run_dir / "results_of_7q" / "results.csv").read_text().splitlines()[1:]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [float(r.split(",")[2]) for r in rows])

    fig = plots.fig_saliency(run)
    sal = lines(run_dir / "saliency.jsonl")
    assert len(sal) == 31 and [s["live"] for s in sal][0]["normal"] == [[1] * 7] * 5
    compared = kind == "s1r-larger"
    assert len(fig.axes) == 2 * (1 + compared)  # the candidates' losses below the saliencies for s1r
    if compared:
        losses = [c["loss"] for e in events if e["cell"] == "normal" for c in e["candidates"]]
        got = np.concatenate([c.get_offsets()[:, 1] for c in fig.axes[2].collections[::2]][:31])
        np.testing.assert_allclose(got, losses)


def test_audit_is_recorded_and_plotted(complete_searches):
    run_dir = complete_searches("s1")
    records = lines(run_dir / "audit.jsonl")
    assert [(r["epoch"], r["step"], r["cell"]) for r in records] == [(1, 0, "normal"), (1, 0, "reduce"),
                                                                    (11, 0, "normal"), (11, 0, "reduce")]
    for r in records:
        assert 1 <= r["pruned_true_rank"] <= r["eligible"] <= r["live_ops"]
        for rule in audit.RULES:
            assert -1 <= r[rule]["spearman"] <= 1 and -1 <= r[rule]["spearman_abs"] <= 1
            assert 1 <= r[rule]["true_rank"] <= r["eligible"]
    assert records[0]["live_ops"] == 35 and records[2]["live_ops"] == 35 - 20
    results = json.loads((run_dir / "results.json").read_text())
    assert results["audit"] == audit.summary(records) and results["audit"]["events"] == 2
    fig = plots.fig_audit(plots.load_run(run_dir))
    spearman = fig.axes[0].lines  # s1, s1 |.|, s2, s2 |.|, s2 (0.5), s2 (0.5) |.|
    assert len(spearman) == 6
    np.testing.assert_allclose(spearman[1].get_ydata(), [r["s1"]["spearman_abs"] for r in records[::2]])


def test_tensorboard_gets_heatmaps_and_histograms(complete_searches):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (complete_searches("s1") / "tb").glob("events.out.tfevents.*")
    tags = EventAccumulator(str(events), size_guidance={"images": 0, "histograms": 0}).Reload()
    assert {"beta/normal", "beta/reduce"} <= set(tags.Tags()["images"])
    assert len(tags.Images("beta/normal")) == 18  # one per epoch
    assert len(tags.Histograms("saliency/reduce")) == 31  # one per prune event
    assert tags.Histograms("saliency/reduce")[0].histogram_value.num == 35  # the live ops


def test_a_running_search_is_plotted(complete_searches, tmp_path):
    # The run directory of a search stopped after epoch 5: no results.json, a half-written line.
    run_dir = shutil.copytree(complete_searches("s1"), tmp_path / "running")
    for name in ("results.json", "genotype.json", "genotype_normal.png", "genotype_reduce.png", "summary.png"):
        (run_dir / name).unlink()
    for epoch in range(6, 18):
        for kind in ("alpha", "genotype"):
            (run_dir / "results_of_7q" / kind / f"{epoch}.txt").unlink()
    keep = [json.dumps(e) for e in lines(run_dir / "prune_events.jsonl") if e["epoch"] <= 5]
    (run_dir / "prune_events.jsonl").write_text("\n".join(keep) + '\n{"epoch": 6, "st')
    run = plots.load_run(run_dir)
    assert len(run.events) == 2 * 10 and run.results is None
    assert plots.status(run).endswith("running, 6 of 18 epochs done")
    check_figure_files(plots.write_summary(run_dir, tmp_path / "out"))
    assert (tmp_path / "out" / "current_normal.png").is_file()  # epoch 5's cell, drawn


def test_missing_or_partial_run_directories_give_one_line(tmp_path):
    cases = [(tmp_path / "nope", "no such run directory")]
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "args.json").write_text("{}")
    cases.append((partial, "not a search run directory (no search_space.json)"))
    early = tmp_path / "early"
    early.mkdir()
    for name in ("args.json", "search_space.json"):
        (early / name).write_text("{}")
    cases.append((early, "no finished epoch yet"))
    for run_dir, message in cases:
        result = run_cli("scripts/plot_search.py", run_dir, check=False)
        assert result.returncode == 2 and message in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr


def test_audit_measures_the_truth_and_leaves_no_trace():
    torch.manual_seed(0)
    model = supernet(get_space("darts", 2), 4, 10, 2)
    model.masks()[0][1, 3] = False
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    before = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    measured = audit.measure(model, [(x, y)], torch.device("cpu"), hessian_chunk=40)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers())) and torch.equal(rng, torch.get_rng_state())
    # The truth, computed directly: remove each live op in a copy of the model, recompute the loss.
    truth = audit.removal_change(model, [(x, y)], torch.device("cpu"))
    assert torch.equal(measured["truth"], truth) and truth[0, 1, 3] == 0
    first = saliency.saliency_first_order(model, [(x, y)], torch.device("cpu")).double()
    for rule, coef in audit.RULES.items():
        assert torch.allclose(measured[rule], first + coef * (measured["s2"] - first), atol=1e-12)
    records = audit.compare(measured, model, restrict=True, pruned={"normal": 2 * 7 + 4})
    for cell, r in enumerate(records):
        live = model.masks()[cell].flatten()
        eligible = model.space.eligible(cell, model.masks()[cell], True).flatten()
        t, s = truth[cell].flatten(), measured["s1"][cell].flatten()
        assert r["live_ops"] == int(live.sum()) and -1 <= r["s1"]["spearman"] <= 1
        assert r["s1"]["spearman"] == pytest.approx(audit.spearman(s[live], t[live]))
        pick = int(s.abs().masked_fill(~eligible, float("inf")).argmin())
        assert r["s1"]["true_rank"] == 1 + sum(float(v) < float(t[pick]) for v in t[eligible])
    assert "pruned_true_rank" in records[0] and "pruned_true_rank" not in records[1]
