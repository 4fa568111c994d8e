"""TensorBoard: rank 0's writer on the run directory (a writer that writes nothing elsewhere), and
the mixing-weight image.

TensorBoard is a view of what the log, the checkpoints and results.json hold, so a write that fails
(a full disk, a quota, an I/O error) costs one warning line and the run's later TensorBoard
records, never the run.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from plumbing import rundir

log = logging.getLogger("fpdarts")
_previous_excepthook = threading.excepthook


class NoWriter:
    """What processes other than rank 0 get (and rank 0 once its writer failed): nothing is written."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class SafeWriter:
    """A SummaryWriter whose first failure is one warning line; every later call does nothing."""

    def __init__(self, writer, log_dir: Path):
        self._writer, self._log_dir, self.failed = writer, log_dir, False

    def __getattr__(self, name: str):
        method = getattr(self._writer, name)

        def call(*args, **kwargs):
            if self.failed:
                return None
            try:
                return method(*args, **kwargs)
            except Exception as e:  # (raised here from TensorBoard's writing thread, too)
                self.failed = True
                _warn(e, self._log_dir)
        return call


def _warn(e: BaseException, log_dir: Path) -> None:
    log.warning("TensorBoard stops here (%s: %s, in %s); the log and results.json hold every figure",
                type(e).__name__, e, log_dir)


def _quiet_writer_thread(args) -> None:
    """threading.excepthook: the failure of TensorBoard's writing thread is SafeWriter's warning
    line (it surfaces at the next call), not a traceback of its own."""
    if type(args.thread).__name__ != "_AsyncWriterThread":
        _previous_excepthook(args)


def writer(run_dir: Path, main: bool = True):
    """A TensorBoard writer on the run directory on rank 0 (`main`); NoWriter elsewhere."""
    if not main:
        return NoWriter()
    from torch.utils.tensorboard import SummaryWriter

    threading.excepthook = _quiet_writer_thread
    log_dir = Path(run_dir) / rundir.TB
    try:
        return SafeWriter(SummaryWriter(log_dir=str(log_dir)), log_dir)
    except OSError as e:  # (its event file could not be made)
        _warn(e, log_dir)
        return NoWriter()


def beta_image(betas: torch.Tensor, mask: torch.Tensor, scale: int = 12) -> torch.Tensor:
    """An (edges, n_ops) mixing-weight heatmap as a (3, H, W) image for TensorBoard: white (0) to
    dark blue (the largest weight), pruned entries red; each entry `scale` pixels square."""
    level = (betas / betas.max().clamp_min(1e-12)).unsqueeze(0)  # (1, edges, n_ops)
    white, blue, red = (torch.tensor(c, dtype=torch.float32, device=betas.device).view(3, 1, 1)
                        for c in ((1.0, 1.0, 1.0), (0.03, 0.19, 0.42), (0.85, 0.2, 0.2)))
    image = torch.where(mask.unsqueeze(0), white + (blue - white) * level, red)  # (3, edges, n_ops)
    return image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
