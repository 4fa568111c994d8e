"""Non-finite values in a run, injected as corrupt images (NaN pixels) in chosen batches of the
real loaders: `--nan_policy stop` ends the run with one line at the step, `--nan_policy skip`
leaves the step out (no update, logged, counted in results.json) and stops after
`--nan_patience` in a row."""
import json

import pytest
import torch

import train
import train_search
import utils
from conftest import TINY_SEARCH
from plumbing.drivers import engine, search_run

SEARCH = [*TINY_SEARCH[:TINY_SEARCH.index("--epochs")], "--epochs", "2",
          *TINY_SEARCH[TINY_SEARCH.index("--epochs") + 2:]]  # 2 weight steps an epoch
TRAIN = ["--arch", "DARTS_V2", "--dataset", "digits", "--epochs", "2", "--batch_size", "256", "--init_channels", "4",
         "--layers", "2", "--no_auxiliary", "--report_freq", "100", "--seed", "0"]


class Poisoned:
    """A loader whose batches number `bad` (in every pass) carry NaN images."""

    def __init__(self, loader, bad: set[int]):
        self.loader, self.bad = loader, bad

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):  # (the sampler, for set_epoch)
        return getattr(self.loader, name)

    def __iter__(self):
        for i, (x, y) in enumerate(self.loader):
            yield (torch.full_like(x, float("nan")) if i in self.bad else x), y


def poison(monkeypatch, module, seed: int, bad: set[int]) -> None:
    """`module.make_loader`'s shuffled loader of seed `seed` gives NaN images in batches `bad`
    (the search's weight split: the run's seed; its architecture split: seed + 1)."""
    real = module.make_loader

    def make_loader(dataset, *args, shuffle=False, seed=0, **kwargs):
        loader = real(dataset, *args, shuffle=shuffle, seed=seed, **kwargs)
        return Poisoned(loader, bad) if shuffle and seed == wanted else loader
    wanted = seed
    monkeypatch.setattr(module, "make_loader", make_loader)


def run(main, args, capsys) -> tuple[int, str]:
    """(exit code, stderr) of a script's main through the command line's path."""
    try:
        utils.run_cli(main, args)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_a_corrupt_batch_stops_the_search_by_default(tmp_path, monkeypatch, capsys):
    poison(monkeypatch, search_run, 3, {1})
    code, err = run(train_search.main, [*SEARCH, "--out_dir", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: the search diverged: the search loss became non-finite in epoch 0, step 1, "
                          "weight step; nothing was saved")


def test_skip_leaves_out_the_steps_of_corrupt_batches(tmp_path, monkeypatch, capsys):
    """A corrupt weight batch and a corrupt architecture batch in every pass: the search ends, each
    such step skipped and logged; nothing non-finite reaches the weights, α or BN statistics."""
    poison(monkeypatch, search_run, 3, {1})  # the weight split: the second of 2 batches
    poison(monkeypatch, search_run, 4, {0})  # the architecture split: its first batch of each pass
    code, err = run(train_search.main, [*SEARCH, "--nan_policy", "skip", "--out_dir", str(tmp_path)], capsys)
    assert code == 0, err
    (run_dir,) = tmp_path.iterdir()
    log = (run_dir / "log.txt").read_text()
    skipped = [line for line in log.splitlines() if "skipped the " in line]
    assert any("skipped the weight step of epoch 0, step 1: the weights' gradient is non-finite" in s for s in skipped)
    assert any("skipped the architecture step of epoch " in s and "the alphas' gradient" in s for s in skipped)
    assert json.loads((run_dir / "results.json").read_text())["skipped_steps"] == len(skipped) >= 3
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["divergence"]["skipped"] == len(skipped)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_skip_stops_after_patience_in_a_row(tmp_path, monkeypatch, capsys):
    poison(monkeypatch, search_run, 3, {0, 1})  # every weight batch
    code, err = run(train_search.main, [*SEARCH, "--nan_policy", "skip", "--nan_patience", "3",
                                        "--out_dir", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert ("the weights' gradient became non-finite in epoch 1, step 0, weight step (3 weight steps in a row: "
            "--nan_patience)") in err
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "log.txt").read_text().count("skipped the weight step") == 2


def test_skip_in_a_retrain(tmp_path, monkeypatch, capsys):
    """train.py: the corrupt batch of each epoch skipped, the rest trained; the count is resumed
    with the run (it is in the checkpoint)."""
    poison(monkeypatch, engine, 0, {2})
    code, err = run(train.main, [*TRAIN, "--nan_policy", "skip", "--out_dir", str(tmp_path)], capsys)
    assert code == 0, err
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["skipped_steps"] == 2 and results["final_test_top1"] > 0
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert state["divergence"] == {"in_a_row": {"training step": 0}, "skipped": 2}


@pytest.mark.parametrize("flags, message", [
    (["--nan_patience", "0"], "--nan_patience must be at least 1"),
    (["--nan_policy", "ignore"], "invalid choice: 'ignore'")])
def test_bad_nan_flags_are_one_line(capsys, flags, message):
    code, err = run(train_search.main, [*SEARCH, *flags], capsys)
    assert code == 2 and message in err


def test_a_corrupt_batch_stops_a_retrain_by_default(tmp_path, monkeypatch, capsys):
    poison(monkeypatch, engine, 0, {2})
    code, err = run(train.main, [*TRAIN, "--out_dir", str(tmp_path)], capsys)
    assert code == 2 and err == ("error: the training diverged: the training loss became non-finite in epoch 0, "
                                 "step 2, training step; nothing was saved or pruned with it and the last "
                                 "checkpoint, if any, is kept (a lower --learning_rate may help)\n")
