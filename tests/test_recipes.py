"""Each space's search recipe (the authors' settings as defaults, every field overridable by its
flag): NAS-Bench-201's learning rate, drop-path in the S1-S4 supernet, the regulariser and step
order of NAS-Bench-201, its split files and test-transform scoring, BN without running
statistics, SVHN flips and the authors' S3 rule for `none`."""
import copy
import json
import math
from dataclasses import fields
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import data
import saliency as S
import train_search
import utils
from architect import Architect
from conftest import make_imagenet16, run_cli
from model_search import MixedOp, supernet
from operations import OPS
from search_spaces import RECIPES, SPACES, Recipe, get_space, recipe_flag
from splits import search_data
from test_data import no_md5, write_cifar10  # noqa: F401  (no_md5: a fixture)

CPU = torch.device("cpu")

# NAS-Bench-201's schedule (40 epochs, 10 of warm-up): (epoch, step, steps per epoch) -> lr.
# The warm-up values are exact; the cosine ones are 0.001 + 0.012 (1 + cos(pi (e - 10) / 30)).
NB201_LR = [
    (0, 0, 390, 0.0), (0, 195, 390, 0.00125), (5, 50, 100, 0.01375), (9, 99, 100, 0.024975),
    (10, 0, 390, 0.025), (11, 7, 390, 0.024934262744419282), (15, 300, 390, 0.023392304845413266),
    (20, 0, 390, 0.019), (21, 389, 390, 0.017880839716909607), (25, 1, 390, 0.013),
    (29, 100, 390, 0.008119160283090399), (30, 0, 390, 0.001), (39, 389, 390, 0.001),
]
# The reference's table (search-spaces.md, section 3), to its 7 digits.
TABLE = {(0, 0.0): 0.0, (0, 0.5): 0.00125, (5, 0.5): 0.01375, (9, 0.99): 0.0249750, (10, 0.0): 0.025,
         (11, 0.3): 0.0249343, (20, 0.7): 0.0190000, (21, 0.1): 0.0178808, (29, 0.9): 0.0081192,
         (30, 0.2): 0.001, (39, 0.6): 0.001}


def search_args(*flags):
    return train_search.parse_args(list(flags))


def test_nb201_learning_rate_is_the_reference_schedule():
    args = search_args("--search_space", "nb201")
    assert (args.epochs, args.warmup, args.lr_schedule) == (40, 10, "warmup_cosine_nb201")
    for epoch, step, steps, lr in NB201_LR:
        assert train_search.learning_rate(args, epoch, step / steps) == pytest.approx(lr, abs=1e-9), (epoch, step)
    for (epoch, fraction), lr in TABLE.items():
        assert train_search.learning_rate(args, epoch, fraction) == pytest.approx(lr, abs=6e-8), (epoch, fraction)
    # The plain cosine stays available, and is the DARTS space's (per epoch, to 0.001 at the end).
    cosine = search_args("--search_space", "nb201", "--lr_schedule", "cosine")
    assert train_search.learning_rate(cosine, 20, 0.5) == pytest.approx(0.001 + 0.012 * (1 + math.cos(math.pi / 2)))
    darts = search_args()
    assert [train_search.learning_rate(darts, 7, f) for f in (0.0, 0.9)] == [utils.cosine_lr(7, 60, 0.025, 0.001)] * 2


def test_the_search_updates_the_learning_rate_every_step(tmp_path, monkeypatch):
    """A tiny NAS-Bench-201 search: 2 steps per epoch, 1 warm-up epoch of 3 (period 2)."""
    seen = []
    monkeypatch.setattr(utils, "set_lr",
                        lambda optimizer, lr: (seen.append(lr), optimizer.param_groups[0].update(lr=lr)))
    train_search.main(["--search_space", "nb201", "--dataset", "digits", "--subset", "32", "--batch_size", "8",
                       "--init_channels", "4", "--layers", "1", "--epochs", "3", "--warmup", "1",
                       "--report_freq", "100", "--seed", "1", "--no_summary", "--out_dir", str(tmp_path),
                       "--sal_type", "vanilla"])
    assert seen == pytest.approx([0.0, 0.0125, 0.025, 0.025, 0.001, 0.001], abs=1e-12)


def test_drop_path_ramps_over_the_epochs_in_s1_to_s4_only():
    s1 = search_args("--search_space", "s1")
    assert (s1.epochs, s1.warmup, s1.drop_path_prob) == (50, 20, 0.2)
    assert [train_search.drop_path_prob(s1, e) for e in (0, 49)] == [0.0, 0.2]
    assert train_search.drop_path_prob(s1, 21) == pytest.approx(0.2 * 21 / 49)
    assert search_args().drop_path_prob == 0.0 and search_args("--search_space", "nb201").drop_path_prob == 0.0
    assert search_args("--search_space", "s3", "--drop_path_prob", "0").drop_path_prob == 0.0


def test_drop_path_zeroes_whole_samples_of_an_edge_in_training_mode_only():
    torch.manual_seed(0)
    edge = MixedOp([OPS["sep_conv_3x3"](4, 1, False), OPS["skip_connect"](4, 1, False)])
    x, w = torch.randn(64, 4, 6, 6), torch.tensor([0.3, 0.7])
    edge.eval()
    plain = edge(x, w, [True, True])
    assert torch.equal(edge(x, w, [True, True], 0.5), plain)  # evaluation: no drop-path
    edge.train()
    torch.manual_seed(1)
    full = edge(x, w, [True, True])
    torch.manual_seed(1)
    dropped = edge(x, w, [True, True], 0.5)
    zero = dropped.flatten(1).abs().sum(1) == 0
    assert 10 < int(zero.sum()) < 54  # about half the samples, each whole
    torch.testing.assert_close(dropped[~zero], full[~zero] / 0.5)


def test_saliency_sees_drop_path_and_the_comparisons_do_not():
    torch.manual_seed(0)
    model = supernet(get_space("s2", steps=2), 4, 10, 3)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,)))]

    def scored(p):  # (on a copy: the saliency pass updates the BN statistics)
        net = copy.deepcopy(model)
        net.drop_path_prob = p
        torch.manual_seed(3)
        losses = S.compare_candidates(net, 0, [0, 3], lambda: batches, CPU)
        return S.saliency_first_order(net, batches, CPU), losses

    sal0, losses0 = scored(0.0)
    sal5, losses5 = scored(0.5)
    assert not torch.allclose(sal0, sal5)
    assert losses0 == losses5
    model.eval()
    x = batches[0][0]
    model.drop_path_prob = 0.5
    dropped = model(x)
    model.drop_path_prob = 0.0
    assert torch.equal(dropped, model(x))


def test_nb201_architecture_step_has_no_regulariser():
    torch.manual_seed(0)
    model = supernet(get_space("nb201"), 4, 10, 1)
    model.keep_cell[0, :3] = False  # pruned ops: the regulariser would have something to push
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    args = search_args("--search_space", "nb201")
    assert args.reg_alpha == 0.0 and search_args().reg_alpha == 0.1
    for beta_grad in (False, True):
        arch = Architect(model, reg_alpha=args.reg_alpha, lr=0.0)
        arch.step(x, y, beta_grad=beta_grad)
        grad = model.alphas_cell.grad.clone()
        model.alphas_cell.grad = None
        F.cross_entropy(model(x), y).backward(inputs=[model.alphas_cell])
        torch.testing.assert_close(grad, model.alphas_cell.grad)
        model.alphas_cell.grad = None
    with_reg = Architect(model, reg_alpha=0.1, lr=0.0)
    with_reg.step(x, y)
    assert not torch.allclose(with_reg.model.alphas_cell.grad, grad)


@pytest.mark.parametrize("space,order", [("nb201", ["weight", "arch"]), ("darts", ["arch", "weight"]),
                                         ("s1", ["arch", "weight"])])
def test_step_order(space, order, monkeypatch):
    args = search_args("--search_space", space, "--init_channels", "4", "--layers", "3" if space != "nb201" else "1")
    world = SimpleNamespace(device=CPU, distributed=False)
    run = train_search.build(args, world, 10)
    calls = []
    monkeypatch.setattr(run.architect, "step", lambda *a, **k: calls.append("arch"))
    monkeypatch.setattr(run.optimizer, "step", lambda *a, **k: calls.append("weight"))
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    train_search.search_step(run, x, y, x, y, 0.01, [utils.AverageMeter(), utils.AverageMeter()], "test")
    assert calls == order
    flipped = "weight_first" if order[0] == "arch" else "arch_first"
    assert search_args("--search_space", space, "--step_order", flipped).step_order == flipped


def nb201_split_file(path, **lists):
    """A split file in the benchmark's format: JSON, each name -> [type, list]."""
    path.write_text(json.dumps({name: ["int", values] for name, values in lists.items()}))


def test_cifar10_split_file_selects_exactly_the_listed_images(tmp_path, no_md5):  # noqa: F811
    root = write_cifar10(tmp_path / "cifar")  # 30 training images
    splits = tmp_path / "splits"
    splits.mkdir()
    train, valid = [3, 0, 17, 29, 8], [1, 2, 22, 11]
    nb201_split_file(splits / "cifar-split.txt", train=train, valid=valid)
    d = search_data("cifar10", str(root), split="benchmark", splits_dir=str(splits), portion=0.5,
                         subset=None, scoring_transform="test")
    assert d.weights.indices == train and d.arch.indices == valid and d.scoring.indices == valid
    assert "cifar-split.txt" in d.split
    plain, test_view, _ = data.get_datasets("cifar10", str(root))
    raw = data.with_transform(plain, test_view.transform)
    for k, i in enumerate(valid):  # the scoring set: the listed images, without augmentation
        assert torch.equal(d.scoring[k][0], raw[i][0]) and d.scoring[k][1] == raw[i][1]
    assert d.arch.dataset is d.weights.dataset  # alpha: the training set itself (augmenting transform)
    # Scoring on the training transform: the architecture set itself.
    same = search_data("cifar10", str(root), split="benchmark", splits_dir=str(splits), portion=0.5,
                            subset=None, scoring_transform="train")
    assert same.scoring is same.arch


def test_test_set_xvalid_split_for_imagenet16(tmp_path):
    root = make_imagenet16(tmp_path / "ImageNet16")  # 40 training images, 4 test images (of 120 classes)
    splits = tmp_path / "splits"
    splits.mkdir()
    nb201_split_file(splits / "imagenet-16-120-test-split.txt", xvalid=[3, 1], xtest=[0, 2])
    d = search_data("imagenet16", str(root), split="benchmark", splits_dir=str(splits), portion=0.5,
                         subset=None, scoring_transform="test")
    train, test, _ = data.get_datasets("imagenet16", str(root))
    assert len(d.weights) == len(train) == 40  # the weights: the whole training set
    assert d.arch.indices == d.scoring.indices == [3, 1]
    for k, i in enumerate([3, 1]):  # the test set's images, at its own (test) transform
        assert torch.equal(d.scoring[k][0], test[i][0]) and d.scoring[k][1] == test[i][1]
    import torchvision.transforms as T

    crops = lambda view: any(isinstance(t, T.RandomCrop) for t in view.dataset.transform.transforms)
    assert crops(d.arch) and not crops(d.scoring)  # alpha: the test set's images, augmented
    assert d.arch.dataset.data is d.scoring.dataset.data
    assert "xvalid" in d.split


def test_split_file_errors_are_one_line(tmp_path):
    root = make_imagenet16(tmp_path / "ImageNet16")
    splits = tmp_path / "splits"
    splits.mkdir()
    with pytest.raises(data.DatasetMissing, match="no split file .*imagenet-16-120-test-split.txt"):
        search_data("imagenet16", str(root), split="benchmark", splits_dir=str(splits), portion=0.5,
                         subset=None, scoring_transform="test")
    nb201_split_file(splits / "imagenet-16-120-test-split.txt", xvalid=[3, 4])
    with pytest.raises(data.DatasetMissing, match="holds index 4, outside the 4 images"):
        search_data("imagenet16", str(root), split="benchmark", splits_dir=str(splits), portion=0.5,
                         subset=None, scoring_transform="test")
    with pytest.raises(data.DatasetMissing, match="split files for cifar10, cifar100, imagenet16, not digits"):
        search_data("digits", "", split="benchmark", splits_dir=str(splits), portion=0.5, subset=None,
                         scoring_transform="test")
    # Without the files: the train_portion split, and the label says so.
    d = search_data("digits", "", split="benchmark", splits_dir=None, portion=0.5, subset=20,
                         scoring_transform="test")
    assert (len(d.weights), len(d.scoring)) == (10, 10) and d.split == "train_portion (no --nb201_splits given)"


def test_missing_split_folder_is_one_line(tmp_path):
    out = run_cli("train_search.py", "--search_space", "nb201", "--dataset", "cifar10", "--data", tmp_path,
                  "--nb201_splits", tmp_path / "nowhere", "--out_dir", tmp_path / "runs", check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "--nb201_splits" in lines[0] and "no such folder" in lines[0]
    wrong = run_cli("train_search.py", "--nb201_splits", tmp_path, check=False)
    assert wrong.returncode == 2 and "needs --data_split benchmark" in wrong.stderr


def test_svhn_is_flipped_in_training_as_the_authors_did():
    import torchvision.transforms as T

    def flips(tf):
        return any(isinstance(t, T.RandomHorizontalFlip) for t in tf.transforms)

    train, test = data.transforms("svhn")
    assert flips(train) and not flips(test)
    assert not flips(data.transforms("svhn", flip=False)[0]) and not flips(data.transforms("cifar10", flip=False)[0])
    import train as train_script

    assert train_script.build_parser().parse_args([]).flip
    assert not train_script.build_parser().parse_args(["--no_flip"]).flip
    assert not search_args("--no_flip").flip and search_args().flip


# A value other than every space's default, per recipe flag.
OTHER = {"epochs": ("27", 27), "warmup": ("3", 3), "weight_decay": ("1e-5", 1e-5), "lr_schedule": None,
         "reg_alpha": ("0.3", 0.3), "step_order": None, "drop_path_prob": ("0.1", 0.1), "s2_batch_size": ("48", 48),
         "data_split": None, "scoring_transform": None, "track_running_stats": None, "nesterov": None}
CHOICES = {"lr_schedule": ("cosine", "warmup_cosine_nb201"), "step_order": ("arch_first", "weight_first"),
           "data_split": ("train_portion", "benchmark"), "scoring_transform": ("train", "test"),
           "track_running_stats": ("0", "1")}


@pytest.mark.parametrize("space", SPACES)
def test_every_recipe_field_is_a_default_a_flag_overrides(space):
    recipe = RECIPES[space]
    base = ["--search_space", space, "--sal_second"]
    defaults = search_args(*base)
    for f in fields(Recipe):
        dest, own = recipe_flag(f.name), getattr(recipe, f.name)
        assert getattr(defaults, dest) == own, f.name
        if f.name == "nesterov":
            flags, value = (["--no_nesterov"], False) if own else (["--nesterov"], True)
        elif f.name in CHOICES:
            text = next(c for c in CHOICES[f.name] if c != str(own))
            flags, value = [f"--{dest}", text], int(text) if f.name == "track_running_stats" else text
        else:
            text, value = OTHER[f.name]
            flags = [f"--{dest}", text]
        assert getattr(search_args(*base, *flags), dest) == value, f.name
    # Without --sal_second the saliency batch is the search batch, in every space.
    assert search_args("--search_space", space, "--batch_size", "24").sal_batch_size == 24


@pytest.mark.parametrize("space,layers", [("nb201", 1), ("s3", 3)])
def test_bn_without_running_statistics(space, layers):
    model = supernet(get_space(space, steps=2), 4, 10, layers, track_running_stats=False)
    names = [n for n, _ in model.named_buffers() if n.startswith("cells.0.") and "running" in n]
    assert names == [] and any("running_mean" in n for n, _ in model.named_buffers())  # (the stem keeps its own)
    model.eval()
    x = torch.randn(6, 3, 8, 8)
    assert torch.isfinite(model(x)).all()
    cell_bn = next(m for m in model.cells[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not cell_bn.track_running_stats and cell_bn.running_mean is None
    tracked = supernet(get_space(space, steps=2), 4, 10, layers)
    assert any(n.startswith("cells.0.") and "running" in n for n, _ in tracked.named_buffers())
    assert search_args("--search_space", "nb201", "--track_running_stats", "0").track_running_stats == 0


def test_the_authors_none_rule_in_s3():
    """Node 2 (edges 0, 1) of a 2-node S3 cell with only `none` left on edge 1: the authors' rule
    counts that none as the node's second input and protects it, and the cell derives
    skip_connect there; ours counts it as no input, so it stays prunable."""
    ours, theirs = get_space("s3", steps=2), get_space("s3", steps=2, none_rule="count")
    keep = torch.ones(5, 3, dtype=torch.bool)  # edges 0->2, 1->2, 0->3, 1->3, 2->3; ops none, skip, sep3
    keep[1, 1:] = False  # edge 1->2: only none left
    keep[0, 0] = False   # edge 0->2: skip and sep3
    mine, authors = ours.eligible(0, keep, True), theirs.eligible(0, keep, True)
    assert authors[1, 0] == 0 and authors[0].tolist() == [False, True, True]  # node 2: 2 edges with a live op
    assert mine[1, 0] == 1  # for ours, none carries nothing: prunable
    keep[0, 2] = False  # node 2 ends with skip on 0->2 and none on 1->2 (the authors' end state)
    keep[2:, 0] = False  # node 3: none pruned, 3 edges live
    betas = torch.full((2, 5, 3), 1 / 3)
    genotype = theirs.derive(betas, [keep, keep], True, 8)
    assert ("skip_connect", 1) in genotype.normal[:2]  # the none-only edge derives skip_connect
    with pytest.raises(ValueError, match="no 'none' op"):
        get_space("s1", none_rule="count")
    assert run_cli("train_search.py", "--none_rule", "count", check=False).returncode == 2


def test_nb201_search_on_the_benchmark_split(tmp_path):
    """The whole path: a NAS-Bench-201 search on ImageNet16-120 whose architecture, saliency,
    comparisons and validation use the listed half of the test set."""
    root = make_imagenet16(tmp_path / "ImageNet16")
    splits = tmp_path / "splits"
    splits.mkdir()
    nb201_split_file(splits / "imagenet-16-120-test-split.txt", xvalid=[3, 1, 0], xtest=[2])
    run_cli("train_search.py", "--search_space", "nb201", "--dataset", "imagenet16", "--data", root,
            "--nb201_splits", splits, "--batch_size", "8", "--init_channels", "4", "--layers", "1", "--epochs", "3",
            "--warmup", "1", "--num_compare", "2", "--iter_compare", "0", "--report_freq", "100", "--seed", "0",
            "--no_summary", "--out_dir", tmp_path / "runs")
    (run,) = (tmp_path / "runs").iterdir()
    recorded = json.loads((run / "search_space.json").read_text())
    assert recorded["data_split"] == ("benchmark (imagenet-16-120-test-split.txt: 40 weight images, "
                                      "3 test-set xvalid images)")
    assert recorded["recipe"]["scoring_transform"] == "test" and recorded["recipe"]["data_split"] == "benchmark"
    results = json.loads((run / "results.json").read_text())
    assert results["data_split"] == recorded["data_split"] and results["recipe"] == recorded["recipe"]
    assert len((run / "prune_events.jsonl").read_text().splitlines()) == 4  # 2 events per epoch of 5 steps
