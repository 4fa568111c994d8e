"""--sal_source arch_steps: s1 accumulated from the gradients the architecture steps compute anyway
equals the full pass on a frozen supernet, the step itself is unchanged, and a search killed
mid-accumulation resumes bit for bit."""
import json

import pytest
import torch

import saliency as S
import train_search
import utils
from architect import Architect
from conftest import run_cli
from model_search import Network
from test_resume import kill_when, only_run


def frozen(seed=0):
    """A double-precision supernet with some ops pruned, and 3 batches."""
    torch.manual_seed(seed)
    model = Network(2, 3, 3, steps=2).double()
    model.keep_normal[1, 2] = model.keep_reduce[3, 5] = False
    batches = [(torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,))) for _ in range(3)]
    return model, batches


def test_accumulated_s1_equals_the_full_pass_on_a_frozen_supernet():
    model, batches = frozen()
    architect = Architect(model, lr=0.0)  # alphas frozen; no weight step between the steps
    pruner = S.Pruner(model, device=torch.device("cpu"), source="arch_steps")
    for x, y in batches:
        pruner.accumulate(*architect.step(x, y, beta_grad=True))
    full = S.saliency_first_order(model, batches, torch.device("cpu"))
    assert torch.allclose(pruner.accumulated(), full, atol=1e-12, rtol=1e-9)
    assert torch.allclose(pruner.saliency([]), full, atol=1e-12, rtol=1e-9)  # no pass needed
    pruner.reset_accumulation()
    assert torch.equal(pruner.accumulated(), torch.zeros_like(full))


def test_the_leaf_step_gives_the_same_alpha_gradient():
    model, batches = frozen(1)
    x, y = batches[0]
    reference = Architect(model, reg_alpha=0.1)
    reference.val_loss(x, y).backward(inputs=model.arch_parameters())
    expected = [a.grad.clone() for a in model.arch_parameters()]
    for a in model.arch_parameters():
        a.grad = None
    Architect(model, lr=0.0, reg_alpha=0.1)._leaf_backward(x, y)
    for a, g in zip(model.arch_parameters(), expected):
        assert torch.allclose(a.grad, g, atol=1e-13)


def test_s2_with_accumulated_s1_adds_only_the_hessian_term():
    model, batches = frozen(2)
    full = S.saliency_second_order(model, batches[:1], torch.device("cpu"), chunk=40)
    s1 = S.saliency_first_order(model, batches[:1], torch.device("cpu"))
    combined = S.saliency_second_order(model, batches[:1], torch.device("cpu"), chunk=40, first_order=s1)
    assert torch.allclose(combined, full, atol=1e-12)


# 32 weight images in batches of 8 (4 steps per epoch), a schedule point every 3 steps: windows of
# architecture steps cross the epoch ends, where the checkpoints hold a running sum.
ARGS = ["--dataset", "digits", "--subset", "64", "--batch_size", "8", "--init_channels", "4", "--layers", "3",
        "--steps", "2", "--epochs", "6", "--warmup", "1", "--prune_interval", "3", "--report_freq", "100",
        "--seed", "9", "--sal_source", "arch_steps", "--num_compare", "2", "--iter_compare", "0", "--no_summary"]


def test_search_killed_mid_accumulation_resumes_exactly(tmp_path):
    run_cli("train_search.py", *ARGS, "--out_dir", tmp_path / "ref")
    ref = only_run(tmp_path / "ref")
    started = lambda out: any("epoch 3 lr" in p.read_text() for p in out.glob("search-*/log.txt"))
    cut = kill_when("train_search.py", ARGS, tmp_path / "cut", started)
    assert not (cut / "results.json").exists(), "the search finished before it was killed"
    run_cli("train_search.py", *ARGS, "--resume", cut)
    for name in ("genotype.json", "prune_events.jsonl", "results_of_7q/results.csv"):
        assert (ref / name).read_text() == (cut / name).read_text(), name
    a, b = (torch.load(d / "checkpoint.pt", weights_only=False) for d in (ref, cut))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert json.loads((ref / "results.json").read_text())["variant"] == "FP-DARTS-s1r+arch_steps"
    events = [json.loads(line) for line in (ref / "prune_events.jsonl").read_text().splitlines()]
    assert len(events) == 2 * 5 and all(len(e["candidates"]) == 2 for e in events)


@pytest.mark.parametrize("flags", [["--sal_type", "vanilla"], ["--unrolled"]])
def test_arch_steps_needs_the_first_order_task_saliency(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as info:
        utils.run_cli(train_search.main, ["--out_dir", str(tmp_path), "--sal_source", "arch_steps", *flags])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--sal_source arch_steps needs --sal_type task" in err
