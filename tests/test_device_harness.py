"""GPU readiness without a GPU: the device harness (tests/device_harness.py) fails on the faults a
GPU would meet, passes on the project's code (every script the suite runs goes through it), and
counts the host-device synchronisations of a training step."""
import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

import train_search
import utils
from conftest import TINY_SEARCH
from device_harness import DeviceHarness
from genotypes import DARTS_V2
from model import NetworkCIFAR
from plumbing import distributed, timing
from plumbing.cli import UserError
from plumbing.divergence import Divergence
from plumbing.drivers import engine, search_run
from search_spaces import edge_endpoints, has_redundant_op

# ---------------------------------------------------------------- the two faults, as they were


def has_redundant_op_before(keep, steps, restrict, num_kept_min):
    """search_spaces.has_redundant_op at 3992fb3: index and counts made on the CPU."""
    dst = torch.tensor([d for _, d in edge_endpoints(steps)])
    per_node = torch.zeros(steps + 2, dtype=torch.long).index_add_(0, dst, keep.sum(1).long())
    return bool((per_node[2:] > 2).any())


def pooled_averages_before(meters):
    """utils.pooled_averages at 3992fb3: the totals on the CPU, whatever the collective's device."""
    totals = torch.tensor([[m.sum, float(m.count)] for m in meters.values()], dtype=torch.float64)
    distributed.all_reduce_sum(totals)
    return {name: (s / c.clamp(min=1)).item() for name, (s, c) in zip(meters, totals)}


def test_the_harness_fails_on_both_faults_as_they_were_and_passes_the_fixed_functions():
    keep = torch.ones(14, 7, dtype=torch.bool, device="cpu")  # (the run's device: real tensors)
    meter = utils.AverageMeter()
    meter.update(2.0, 4)
    with DeviceHarness(meta=True, also=(__file__,)):
        with pytest.raises(RuntimeError, match="same device"):
            has_redundant_op_before(keep, 4, True, 8)
        with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
            pooled_averages_before({"loss": meter})
        assert has_redundant_op(keep, 4, True, 8) is True
        assert utils.pooled_averages({"loss": meter}, torch.device("cpu")) == {"loss": 2.0}


def test_fake_cuda_tensors_raise_cudas_mismatch_on_the_old_mask_rule_only():
    """FakeTensor CUDA tensors (on a CPU build): the old rule mixes devices as on a GPU; the new one
    gets as far as its one host read (a fake tensor has no value to read)."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        keep = torch.ones(14, 7, dtype=torch.bool, device="cuda")
        with pytest.raises(RuntimeError, match=r"same device.*cuda"):
            has_redundant_op_before(keep, 4, True, 8)
        with pytest.raises(DataDependentOutputException):
            has_redundant_op(keep, 4, True, 8)


def test_a_gpu_index_becomes_the_current_device(monkeypatch):
    """--gpu N without torchrun: GPU N is made the current device (phase timer, allocator, random
    streams); an index the machine lacks is one line."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert distributed.init(gpu=1).device == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 1)]
    with pytest.raises(UserError, match="--gpu 2: this machine has 2 CUDA device"):
        distributed.init(gpu=2)


def test_a_checkpoint_holds_the_cuda_random_state_of_its_own_gpu_only(monkeypatch):
    """One CUDA state (the process's GPU), restored onto whichever GPU resumes it: a resume on a
    machine that sees fewer GPUs than the writer no longer fails with an invalid device ordinal."""
    written, restored = torch.zeros(16, dtype=torch.uint8, device="cpu"), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: written)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    state = utils.rng_state(torch.device("cuda", 3))
    assert state["cuda"] is written
    utils.set_rng_state(state, torch.device("cuda", 0))
    assert restored == [(written, torch.device("cuda", 0))]
    utils.set_rng_state(state, torch.device("cpu"))  # (a GPU run resumed on a CPU: the CUDA state is unused)
    assert "cuda" not in utils.rng_state(torch.device("cpu")) and len(restored) == 1


# ---------------------------------------------------------------- synchronisations per step

def per_step_reads(run_steps, timer: timing.PhaseTimer, steps: int) -> tuple[list[int], dict]:
    """Host reads of each of `steps` calls of `run_steps(step)`, the phase timer synchronising as on
    CUDA (one step in `timer.every`): [reads per step], and where they were made."""
    waits = []
    timer.synchronize = lambda: waits.append(1)
    counts = []
    with DeviceHarness(meta=True, count=True) as h:
        for step in range(steps):
            before = h.total() + len(waits)
            run_steps(step)
            counts.append(h.total() + len(waits) - before)
    return counts, dict(h.syncs)


@pytest.mark.parametrize("extra", [[], ["--sal_source", "arch_steps"], ["--nan_policy", "skip"],
                                   ["--search_space", "nb201", "--layers", "1"]],
                         ids=["s1", "arch_steps", "nan_skip", "nb201"])
def test_a_search_step_reads_the_device_once(tmp_path, extra):
    """A steady-state search iteration (the loop of search_one_epoch: batches to the device,
    architecture and weight steps, meters) makes at most 3 host reads, the reference DARTS step's
    count (loss, top-1, top-5): one, plus one per step decided now under --nan_policy skip; the
    phase timer adds its synchronisations on one step in `every` (a measurement step)."""
    flags = TINY_SEARCH[:TINY_SEARCH.index("--layers")] + TINY_SEARCH[TINY_SEARCH.index("--epochs"):]
    flags += [] if "nb201" in extra else ["--layers", "3", "--steps", "2"]
    args = train_search.parse_args([*flags, "--warmup", "2", "--out_dir", str(tmp_path), *extra])
    utils.on_device(args, torch.device("cpu"))
    run = search_run.setup(args, distributed.World())
    search = train_search.build(args, distributed.World(), run.num_classes)
    every = 4  # (the runs synchronise on one step in timing.SAMPLE_EVERY; fewer steps to count here)
    search.timer = timing.PhaseTimer(torch.device("cpu"), every=every)
    search_run.start_epoch(run, 0)
    # The batches are read before: a data set's code reads its CPU tensors (in the loader's
    # worker processes on a GPU machine), which the harness cannot tell from device reads.
    batches = [(*next(run.batches), *next(run.valid_iter)) for _ in range(2)]

    def one_step(step):  # (what search_one_epoch does per step, but the progress line and prune points)
        x, y, x_val, y_val = batches[step % 2]
        train_search.search_step(search, x, y, x_val, y_val, 0.025, run.meters, f"epoch 0, step {step}")
        search.timer.tick()

    counts, where = per_step_reads(one_step, search.timer, 2 * every + 1)
    steady = counts[1:]  # (the first step copies the masks to the host)
    sampled = [c for i, c in enumerate(steady, 1) if i % every == 0]
    others = [c for i, c in enumerate(steady, 1) if i % every]
    assert max(others) == (3 if "skip" in extra else 1), (counts, where)
    assert max(sampled) == max(others) + 2, (counts, where)  # (the timer: the ends of the arch and weight phases)
    assert run.meters[0].count == len(counts) * 16


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_training_step_reads_the_device_once(policy):
    """A retrain step (engine.train_one_epoch) makes one host read (loss, top-1, top-5 and the
    non-finite checks together), two under --nan_policy skip; the epoch's pooled figures one more."""
    model = NetworkCIFAR(4, 10, 2, True, DARTS_V2)
    optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
    batches = [(torch.randn(4, 3, 32, 32, device="cpu"), torch.randint(0, 10, (4,), device="cpu"))] * 3
    watch = Divergence(policy)
    epoch = lambda _: engine.train_one_epoch(model, batches, optimizer, torch.nn.CrossEntropyLoss(),
                                             torch.device("cpu"), grad_clip=5.0, aux_weight=0.4, watch=watch)
    counts, where = per_step_reads(epoch, timing.PhaseTimer(torch.device("cpu")), 1)
    assert counts == [len(batches) * (2 if policy == "skip" else 1) + 1], where


def test_the_phases_still_add_up_to_the_wall_time_when_sampled(monkeypatch):
    """On CUDA the steps' phases synchronise on one step in `every`: the unsynchronised steps'
    seconds are shared among those phases as the synchronised steps measured them."""
    timer = timing.PhaseTimer(torch.device("cpu"), every=4)
    timer.synchronize = lambda: None
    clock = iter(range(1000))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(clock)))
    for _ in range(8):
        with timer("arch"):
            pass  # 1 s
        with timer("weight"):
            next(clock)  # 2 s
        timer.tick()
    seconds = timer.lap()
    assert seconds == pytest.approx({"arch": 8.0, "weight": 16.0})
