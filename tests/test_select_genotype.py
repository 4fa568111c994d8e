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
