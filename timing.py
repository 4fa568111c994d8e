"""Where a run's time goes: wall seconds per phase (architecture steps, weight steps, saliency,
validation, ...), per epoch and in total, and the rates and ETAs of the progress lines."""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


def duration(seconds: float) -> str:
    """A short human duration: 45s, 3m05s, 2h07m."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class PhaseTimer:
    """Wall seconds per phase: `with timer("weight"): ...` adds the block's time to its phase.

    On CUDA the block ends with a synchronize, so asynchronous kernels are charged to the phase
    that launched them. Phases must not nest. `total` survives a resume through `state_dict`.
    """

    def __init__(self, device: torch.device | None = None):
        self.total: dict[str, float] = {}
        self.mark: dict[str, float] = {}  # `total` when the last `lap` was taken
        self._cuda = device is not None and device.type == "cuda"

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._cuda:
                torch.cuda.synchronize()
            self.total[phase] = self.total.get(phase, 0.0) + time.perf_counter() - start

    def lap(self) -> dict[str, float]:
        """Seconds per phase since the last lap (or the start), e.g. an epoch's; phases that took
        no time in it are left out."""
        seconds = {k: v - self.mark.get(k, 0.0) for k, v in self.total.items() if v != self.mark.get(k, 0.0)}
        self.mark = dict(self.total)
        return seconds

    def iterate(self, iterable: Iterable, phase: str = "data") -> Iterator:
        """`iterable`, with the time spent producing each item charged to `phase`."""
        it = iter(iterable)
        while True:
            with self(phase):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def state_dict(self) -> dict:
        return {"total": dict(self.total), "mark": dict(self.mark)}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.mark = dict(state["total"]), dict(state["mark"])


def summary(seconds: dict[str, float]) -> str:
    """'arch 1.2s, weight 3.4s, ...; 4.6s in all' (the phases in the order given)."""
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    return f"{parts}; {sum(seconds.values()):.1f}s in all"


class Rate:
    """Seconds per step of the current epoch, counting only the steps themselves (time given to
    `exclude`, such as prune events, is left out), and images per second."""

    def __init__(self):
        self.start, self.excluded, self.images = time.perf_counter(), 0.0, 0

    def exclude(self, seconds: float) -> None:
        self.excluded += seconds

    def update(self, images: int) -> None:
        self.images += images

    def step_seconds(self, steps_done: int) -> float:
        return (time.perf_counter() - self.start - self.excluded) / max(steps_done, 1)

    def images_per_second(self) -> float:
        return self.images / max(time.perf_counter() - self.start - self.excluded, 1e-9)


def search_eta(*, steps_left: int, step_seconds: float, epochs_after: int, steps_per_epoch: int,
               events_in_epoch: int, events_after: int, event_seconds: float,
               validation_seconds: float) -> tuple[float, float]:
    """(seconds left in this epoch, seconds left in the search) at the current rates: the
    steps, the prune events still due (each at `event_seconds`) and an end-of-epoch validation
    per epoch."""
    epoch = steps_left * step_seconds + events_in_epoch * event_seconds + validation_seconds
    after = epochs_after * (steps_per_epoch * step_seconds + validation_seconds) + events_after * event_seconds
    return epoch, epoch + after
