"""Where a run's time and memory go: wall seconds and peak memory per phase (architecture steps,
weight steps, saliency, validation, ...), per epoch and in total, and the rates and ETAs of the
progress lines."""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from plumbing.cli import duration  # noqa: F401 (timing.duration: the progress lines')


class PeakMemory:
    """The peak memory of a stretch of code, in MB: on CUDA, the device's `max_memory_allocated`
    (and `max_memory_reserved`); on a CPU, the process's peak resident set size (Linux: VmHWM,
    which `reset` clears; elsewhere the peak since the process started)."""

    def __init__(self, device: torch.device | None = None):
        self.device = device if device is not None and device.type == "cuda" else None
        self.kind = "cuda_allocated" if self.device else "cpu_rss"
        self._proc = Path("/proc/self/clear_refs").exists() and Path("/proc/self/status").exists()

    def reset(self) -> None:
        if self.device is not None:
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._proc:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            except OSError:
                self._proc = False

    def peak(self) -> tuple[float, float | None]:
        """(peak since `reset`, peak reserved on CUDA or None) in MB."""
        if self.device is not None:
            return (torch.cuda.max_memory_allocated(self.device) / 2**20,
                    torch.cuda.max_memory_reserved(self.device) / 2**20)
        if self._proc:
            found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
            if found:
                return int(found.group(1)) / 1024, None
        import resource  # (not on Windows; only where /proc is missing)

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024), None


def _proc_mb(file: str, field: str) -> float | None:
    """`field` of a /proc file ("VmRSS" of /proc/self/status, say) in MB; None where it is missing."""
    path = Path(file)
    found = re.search(rf"{field}:\s+(\d+) kB", path.read_text()) if path.exists() else None
    return int(found.group(1)) / 1024 if found else None


def resident_mb() -> float:
    """This process's resident memory now, in MB (0 where /proc is missing)."""
    return _proc_mb("/proc/self/status", "VmRSS") or 0.0


def available_mb() -> float | None:
    """The machine's available memory now, in MB (Linux's MemAvailable; None where it is unknown)."""
    return _proc_mb("/proc/meminfo", "MemAvailable")


SAMPLE_EVERY = 20  # a training step in 20 synchronises its phases on a GPU (PhaseTimer)


class PhaseTimer:
    """Wall seconds and peak memory per phase: `with timer("weight"): ...` adds the block's time
    to its phase and raises the phase's peak to the block's.

    On CUDA a block ends with a synchronize of the device, so asynchronous kernels are charged to
    the phase that launched them. The phases of a training step (`stepwise`) synchronise on one
    step in `every` only (`tick()` ends a step): a step's own host read drains the queue anyway,
    and each synchronize more stalls the GPU. The time of the other steps is then split among
    those phases in the shares measured on the synchronised ones (`fold`), so the phases still add
    up to the wall time. Phases must not nest. `total` and `peak` survive a resume through
    `state_dict`.
    """

    def __init__(self, device: torch.device | None = None, every: int = 1,
                 stepwise: tuple[str, ...] = ("data", "arch", "weight")):
        self.total: dict[str, float] = {}
        self.mark: dict[str, float] = {}  # `total` when the last `lap` was taken
        self.peak: dict[str, float] = {}  # MB, over the whole run
        self.peak_reserved: dict[str, float] = {}  # MB, CUDA only
        self.lap_peak: dict[str, float] = {}  # MB, since the last `lap`
        self.memory = PeakMemory(device)
        cuda = device is not None and device.type == "cuda"
        # (None: nothing to wait for; tests give a counter)
        self.synchronize = (lambda: torch.cuda.synchronize(device)) if cuda else None
        self.every, self.stepwise = every, set(stepwise)
        self.sampled, self._steps = True, 0  # whether this step's phases synchronise
        self._exact: dict[str, float] = {}  # seconds of the stepwise phases on synchronised steps
        self._loose: dict[str, float] = {}  # ... on the others, not yet folded into `total`
        self.current: str | None = None  # the phase running (or the one an error left)

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        self.memory.reset()
        self.current = phase
        loose = self.synchronize is not None and not self.sampled and phase in self.stepwise
        try:
            yield
            self.current = None
        finally:
            if self.synchronize is not None and not loose:
                self.synchronize()
            seconds = time.perf_counter() - start
            into = self._loose if loose else self.total
            into[phase] = into.get(phase, 0.0) + seconds
            if not loose and phase in self.stepwise:
                self._exact[phase] = self._exact.get(phase, 0.0) + seconds
            used, reserved = self.memory.peak()
            for peaks, value in ((self.peak, used), (self.lap_peak, used), (self.peak_reserved, reserved)):
                if value is not None:
                    peaks[phase] = max(peaks.get(phase, 0.0), value)

    def tick(self) -> None:
        """A training step ended: the next one synchronises its phases if it is one in `every`."""
        self._steps += 1
        self.sampled = self._steps % self.every == 0

    def fold(self) -> None:
        """Charge the unsynchronised steps' seconds to the stepwise phases, in the shares the
        synchronised steps measured (as they fell, before any was measured)."""
        loose, self._loose = self._loose, {}
        measured = sum(self._exact.values())
        if measured and loose:
            spread = sum(loose.values())
            loose = {phase: spread * seconds / measured for phase, seconds in self._exact.items()}
        for phase, seconds in loose.items():
            self.total[phase] = self.total.get(phase, 0.0) + seconds

    def lap(self) -> dict[str, float]:
        """Seconds per phase since the last lap (or the start), e.g. an epoch's; phases that took
        no time in it are left out."""
        self.fold()
        seconds = {k: v - self.mark.get(k, 0.0) for k, v in self.total.items() if v != self.mark.get(k, 0.0)}
        self.mark = dict(self.total)
        return seconds

    def memory_lap(self) -> dict[str, float]:
        """Peak MB per phase since the last `memory_lap` (or the start), e.g. an epoch's."""
        peaks, self.lap_peak = self.lap_peak, {}
        return peaks

    def memory_summary(self) -> dict:
        """The run's peaks for results.json: the kind of memory, MB per phase and over all."""
        out = {"kind": self.memory.kind, "peak_MB": dict(self.peak), "max_MB": max(self.peak.values(), default=0.0)}
        if self.peak_reserved:
            out["peak_reserved_MB"] = dict(self.peak_reserved)
        return out

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
        self.fold()
        return {"total": dict(self.total), "mark": dict(self.mark), "peak": dict(self.peak),
                "peak_reserved": dict(self.peak_reserved)}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.mark = dict(state["total"]), dict(state["mark"])
        self.peak, self.peak_reserved = dict(state["peak"]), dict(state["peak_reserved"])


def memory_text(peaks: dict[str, float]) -> str:
    """'weight 812 MB, arch 640 MB, ...; peak 812 MB'."""
    parts = ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items())
    return f"{parts}; peak {max(peaks.values(), default=0.0):.0f} MB"


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
