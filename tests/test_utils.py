"""Shared machinery: atomic checkpoints, learning-rate functions, metrics, the validation stream."""
import pytest
import torch

import utils
from data import make_loader
from plumbing import checkpoints


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("simulated crash while writing")


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "checkpoint.pt"
    checkpoints.save(path, {"epoch": 1})
    with pytest.raises(RuntimeError, match="simulated crash"):
        checkpoints.save(path, {"epoch": 2, "bad": Unpicklable()})
    assert checkpoints.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_learning_rate_functions():
    assert utils.cosine_lr(0, 10, 0.025, 0.001) == pytest.approx(0.025)
    assert utils.cosine_lr(10, 10, 0.025, 0.001) == pytest.approx(0.001)
    assert utils.cosine_lr(5, 10, 0.1) == pytest.approx(0.05)
    assert utils.linear_lr(0, 250, 0.1) == pytest.approx(0.1)
    assert utils.linear_lr(244, 250, 0.1) == pytest.approx(0.1 / 245)
    assert utils.linear_lr(249, 250, 0.1) == pytest.approx(0.1 / 245 / 5)
    assert utils.step_lr(2, 0.1) == pytest.approx(0.1 * 0.97**2)
    assert [utils.warmup_lr(1.0, e) for e in (0, 4, 5)] == [0.2, 1.0, 1.0]


def test_accuracy_and_meter():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    top1, top2 = utils.accuracy(logits, torch.tensor([1, 2, 0]), (1, 2))
    assert top1 == pytest.approx(100 / 3) and top2 == pytest.approx(200 / 3)
    meter = utils.AverageMeter()
    meter.update(1.0, 3)
    meter.update(3.0, 1)
    assert meter.avg == 1.5


def test_stream_resumes_at_the_same_batch():
    data = torch.utils.data.TensorDataset(torch.arange(10.0))
    stream = utils.Stream(make_loader(data, 3, shuffle=True, seed=5))
    for _ in range(5):  # into the second pass
        next(stream)
    state = stream.state_dict()
    expected = [next(stream)[0].tolist() for _ in range(6)]
    again = utils.Stream(make_loader(data, 3, shuffle=True, seed=5))  # a fresh process, same flags
    next(again)
    again.load_state_dict(state)
    assert [next(again)[0].tolist() for _ in range(6)] == expected


def test_loaders_split_the_data_between_processes():
    data = torch.utils.data.TensorDataset(torch.arange(10.0))
    for shuffle in (False, True):
        seen = [sum((x.tolist() for (x,) in make_loader(data, 2, shuffle=shuffle, seed=1, rank=r,
                                                          world_size=2)), []) for r in (0, 1)]
        assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(map(float, range(10)))
    seven = torch.utils.data.TensorDataset(torch.arange(7.0))
    odd = [sum((x.tolist() for (x,) in make_loader(seven, 2, rank=r, world_size=2)), []) for r in (0, 1)]
    assert len(odd[0]) + len(odd[1]) == 7  # evaluation: each image once, no padding
