"""train.py and train_imagenet.py end to end: the README commands on a real search directory."""
import argparse
import json

import pytest
import torch

import train
import utils
from conftest import make_image_folder, run_cli
from genotypes import genotype_from_dict, is_restricted
from model import NetworkCIFAR, NetworkImageNet
from plumbing.drivers import train_args
from test_model import MANIFEST
from utils import count_parameters_in_M

TINY = ["--epochs", "2", "--batch_size", "8", "--init_channels", "4", "--layers", "3",
        "--report_freq", "100", "--workers", "0"]


def only_run(folder, prefix):
    (run,) = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    return run


def check_results(run_dir, network, image_size):
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("final_test_top1", "final_test_top5", "params_M", "multadds_M", "genotype_source",
                "seed", "wall_time_seconds", "device"):
        assert key in results, key
    memory = results["memory"]  # the peak memory of each phase (the process's RSS on a CPU)
    assert memory["kind"] == "cpu_rss" and {"train", "eval"} <= set(memory["peak_MB"])
    assert all(v > 0 for v in memory["peak_MB"].values()) and memory["max_MB"] == max(memory["peak_MB"].values())
    genotype = genotype_from_dict(results["genotype"], "results.json")
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    model = network(state["args"]["init_channels"], len(state["model"]["classifier.bias"]),
                    state["args"]["layers"], state["args"]["auxiliary"], genotype)
    model.load_state_dict(state["model"], strict=True)
    assert results["params_M"] == count_parameters_in_M(model)
    for name in ("args.json", "log.txt", "genotype_normal.png"):
        assert (run_dir / name).is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    return results, genotype


def test_readme_cifar_command_and_eval_reproduces_accuracy(search_runs, image_folder, tmp_path):
    base = search_runs["restricted"]
    run_cli("train.py", "--mode", "train", "--cutout", "--auxiliary", "--base_dir", base,
            "--dataset", "folder", "--data", image_folder, "--out_dir", tmp_path, *TINY)
    run_dir = only_run(tmp_path, "eval-")
    results, genotype = check_results(run_dir, NetworkCIFAR, 32)
    assert is_restricted(genotype) and results["genotype_source"].endswith("genotype/2.txt")
    out = run_cli("train.py", "--mode", "eval", "--model_path", run_dir / "checkpoint.pt",
                  "--dataset", "folder", "--data", image_folder, "--batch_size", "5")
    assert f"test top1 {results['final_test_top1']:.4f} top5 {results['final_test_top5']:.4f}" in out.stdout


def test_readme_cifar_command_larger_space(search_runs, image_folder, tmp_path):
    run_cli("train.py", "--mode", "train", "--no_restrict", "--cutout", "--auxiliary",
            "--base_dir", search_runs["larger"], "--genotype_names", "-1", "1",
            "--dataset", "folder", "--data", image_folder, "--out_dir", tmp_path, *TINY)
    runs = {p.name[-3:]: p for p in tmp_path.iterdir()}
    assert set(runs) == {"-g1", "-g2"}
    _, genotype = check_results(runs["-g2"], NetworkCIFAR, 32)
    assert not is_restricted(genotype)


def test_readme_imagenet_command(search_runs, tmp_path):
    data = make_image_folder(tmp_path / "imagenet", size=40, classes=3, train=4, val=3)
    run_cli("train_imagenet.py", "--mode", "train", "--auxiliary", "--base_path",
            search_runs["restricted"], "--genotype_name", "-1", "--data", data,
            "--out_dir", tmp_path / "out", *TINY)
    results, _ = check_results(only_run(tmp_path / "out", "imagenet-"), NetworkImageNet, 224)
    assert 0 <= results["final_test_top1"] <= results["final_test_top5"] <= 100


def test_darts_checkpoint_naming_and_validation_split(image_folder, tmp_path):
    """--arch DARTS_V2 at the manifest's size: the checkpoint has the original DARTS keys."""
    run_cli("train.py", "--arch", "DARTS_V2", "--dataset", "folder", "--data", image_folder,
            "--out_dir", tmp_path, "--val_portion", "0.25", "--epochs", "1", "--batch_size", "8",
            "--init_channels", "8", "--layers", "6", "--report_freq", "100")
    run_dir = only_run(tmp_path, "eval-")
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    darts = json.loads(MANIFEST.read_text())["configs"]["cifar_DARTS_V2"]["shapes"]
    ours = {k: list(v.shape) for k, v in state["model"].items()}
    darts["classifier.weight"][0] = darts["classifier.bias"][0] = 3  # 3 classes here, 10 there
    darts["auxiliary_head.classifier.weight"][0] = darts["auxiliary_head.classifier.bias"][0] = 3
    assert ours == darts
    results = json.loads((run_dir / "results.json").read_text())
    assert "best_valid_epoch" in results and "best_test_top1_seen" not in results


@pytest.mark.parametrize("args,message", [
    (["--base_dir", "/no/such/run"], "/no/such/run: no such search run directory"),
    (["--base_dir", "RUN", "--genotype_names", "40"], "no genotype for epoch 40; available: 0..2"),
    (["--arch", "DARTS_V2", "--no_restrict"], "--no_restrict was given but this is a restricted"),
    (["--arch", "NOPE"], "NOPE: not a genotype name"),
    (["--arch", "DARTS_V2", "--base_dir", "RUN"], "give exactly one genotype source"),
    (["--base_dir", "EMPTY"], "no per-epoch genotypes in results_of_7q/genotype/"),
    (["--genotype", "TRUNCATED"], "invalid JSON"),
])
def test_bad_genotype_sources(search_runs, image_folder, tmp_path, capsys, args, message):
    truncated = tmp_path / "59.txt"
    truncated.write_text((search_runs["restricted"] / "genotype.json").read_text()[:40])
    where = {"RUN": str(search_runs["restricted"]), "EMPTY": str(tmp_path), "TRUNCATED": str(truncated)}
    args = [where.get(a, a) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(train.main, [*args, "--dataset", "folder", "--data", str(image_folder)])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in stderr and stderr.count("\n") == 1


def test_missing_imagenet_folder_is_one_line(tmp_path):
    result = run_cli("train_imagenet.py", "--arch", "DARTS_V2", "--data", tmp_path, check=False)
    assert result.returncode == 2 and "train/ and val/" in result.stderr
    assert result.stderr.count("\n") == 1


def test_auxiliary_head_on_the_wrong_image_size_is_one_line(tmp_path):
    with pytest.raises(utils.UserError, match=r"head needs 32x32 images, these are 8x8: give --no_aux"):
        train.main(["--arch", "DARTS_V2", "--dataset", "digits", "--out_dir", str(tmp_path), *TINY])
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("dataset, advice", [("digits", "give --no_auxiliary"),
                                             ("folder", "give --no_auxiliary (or --image_size 32)")])
def test_the_auxiliary_head_error_suggests_image_size_only_where_it_is_read(dataset, advice):
    args = argparse.Namespace(auxiliary=True, mode="train", dataset=dataset)
    with pytest.raises(utils.UserError) as info:
        train_args.check_auxiliary(args, 8, 32)
    assert str(info.value).endswith(advice)
