"""select_genotype.py ranks searched genotypes by successive halving on a held-out split of the
training set, and never opens the test split."""
import json
import shutil

from conftest import make_image_folder, run_cli

TRAIN_ARGS = ("--dataset folder --data {root} --image_size 16 --no_auxiliary --no_cutout --init_channels 4 "
              "--layers 2 --batch_size 8 --report_freq 100")


def test_selection_uses_validation_only(tmp_path, search_runs):
    root = make_image_folder(tmp_path / "data", size=16, classes=3, train=8, val=2)
    shutil.rmtree(root / "val")  # the test split is gone: any attempt to read it fails
    refused = run_cli("train.py", "--arch", "DARTS_V2", *TRAIN_ARGS.format(root=root).split(),
                      "--epochs", "1", "--out_dir", tmp_path / "x", check=False)
    assert refused.returncode == 2 and "val" in refused.stderr

    out = tmp_path / "selection"
    result = run_cli("scripts/select_genotype.py", search_runs["restricted"], search_runs["larger"],
                     "--genotype_names", "-1", "-2", "--budgets", "1", "2", "--eta", "2",
                     "--val_portion", "0.25", "--out_dir", out, "--train_args", TRAIN_ARGS.format(root=root))
    selection = json.loads((out / "selection.json").read_text())
    first, last = selection["rounds"]
    assert len(last["ranking"]) == (len(first["ranking"]) + 1) // 2 >= 2  # halving
    for ranking in (first["ranking"], last["ranking"]):
        accs = [r["valid_top1"] for r in ranking]
        assert accs == sorted(accs, reverse=True)
        for r in ranking:  # what train.py wrote: validation figures only, never a test figure
            results = json.loads((tmp_path / r["retrain_dir"] / "results.json").read_text())
            assert results["final_valid_top1"] == r["valid_top1"]
            assert not any("test" in key for key in results)
    best = max(last["ranking"], key=lambda r: r["valid_top1"])
    assert selection["valid_top1"] == best["valid_top1"]
    assert (selection["run"], selection["epoch"]) == (last["ranking"][0]["run"], last["ranking"][0]["epoch"])
    assert f"--base_path {selection['run']} --genotype_name {selection['epoch']}" in result.stdout


def test_train_args_may_not_override_the_protocol(tmp_path, search_runs):
    result = run_cli("scripts/select_genotype.py", search_runs["restricted"], "--train_args", "--epochs 5",
                     "--out_dir", tmp_path, check=False)
    assert result.returncode == 2 and "--train_args may not set --epochs" in result.stderr


def test_an_interrupted_selection_goes_on_where_it_stopped(tmp_path, search_runs):
    """A rerun after an interruption: finished retrains are not trained again, the one cut short
    is resumed from its checkpoint, and the selection comes out the same."""
    root = make_image_folder(tmp_path / "data", size=16, classes=3, train=8, val=2)
    out = tmp_path / "selection"
    args = ["scripts/select_genotype.py", search_runs["restricted"], "--genotype_names", "-1", "-2",
            "--budgets", "1", "2", "--eta", "2", "--val_portion", "0.25", "--out_dir", out,
            "--train_args", TRAIN_ARGS.format(root=root)]
    run_cli(*args)
    first = json.loads((out / "selection.json").read_text())
    dirs = sorted(out.glob("round*/eval-*"))
    cut = dirs[-1]  # the last retrain, as if killed after its first epoch's checkpoint
    (cut / "results.json").unlink()
    (out / "selection.json").unlink()
    log = run_cli(*args).stdout
    assert sorted(out.glob("round*/eval-*")) == dirs  # nothing trained from scratch again
    assert log.count("retrained already in") == len(dirs) - 1
    assert "resuming" in (cut / "log.txt").read_text() and (cut / "results.json").is_file()
    again = json.loads((out / "selection.json").read_text())
    assert again == first
