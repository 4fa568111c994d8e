"""A run that diverges: a non-finite loss, gradient or α is caught at the step where it appears.

`--nan_policy stop` (the default) ends the run there with one line (which tensor, the epoch, step
and phase); the last checkpoint, written before, is finite. Its checks wait on the device until
the step's one host read (`settle`, with the loss and accuracy): on a GPU each read of a device
value stalls the queue, and the run still stops at the end of that step, before anything is
written or pruned. `--nan_policy skip` leaves such a step
out instead (no update: the gradient is dropped and the batch-norm statistics the step's forward
pass moved are put back), logs it, and stops after `--nan_patience` skipped steps of one kind in
a row. A non-finite saliency always stops a search: an op is never pruned on it.
"""
from __future__ import annotations

import argparse
import logging

import torch
import torch.nn as nn

from plumbing.cli import UserError

POLICIES = ("stop", "skip")
log = logging.getLogger("fpdarts")


def add_flags(group) -> None:
    """--nan_policy and --nan_patience, in the search and the training scripts."""
    group.add_argument("--nan_policy", choices=POLICIES, default="stop",
                       help="a non-finite loss, gradient or alpha: stop the run with one line, or skip the step")
    group.add_argument("--nan_patience", type=int, default=10, metavar="N",
                       help="with --nan_policy skip: stop after N skipped steps of one kind in a row (default 10)")


def check_flags(parser: argparse.ArgumentParser, args) -> None:
    if args.nan_patience < 1:
        parser.error(f"--nan_patience must be at least 1 (got {args.nan_patience})")


class Divergence:
    """What a run does with non-finite values (`policy` "stop" or "skip"); `run` names the run in
    its lines ("the search") and `advice` says what may help."""

    def __init__(self, policy: str = "stop", patience: int = 10, run: str = "the run",
                 advice: str = "a lower --learning_rate may help"):
        self.policy, self.patience, self.run, self.advice = policy, patience, run, advice
        self.in_a_row: dict[str, int] = {}
        self.skipped = 0
        self._pending: list[tuple[str, str, torch.Tensor]] = []  # (name, where, finite?) until `settle`

    def _stop(self, name: str, where: str) -> UserError:
        return UserError(f"{self.run} diverged: {name} became non-finite in {where}; nothing was saved "
                         f"or pruned with it and the last checkpoint, if any, is kept ({self.advice})")

    def check(self, name: str, tensor: torch.Tensor, where: str) -> None:
        """Stop at a non-finite `tensor` (`name` at `where`: "the saliency", "epoch 3, step 9, prune
        event"), whatever the policy, now (a host read)."""
        if not torch.isfinite(tensor).all():
            raise self._stop(name, where)

    def defer(self, name: str, tensor: torch.Tensor, where: str) -> None:
        """`check` at the step's `settle`: the flag stays on the device until then."""
        self._pending.append((name, where, torch.isfinite(tensor).all()))

    def settle(self, *values: torch.Tensor) -> list[float]:
        """A step's figures (0-dim tensors: loss, accuracy) on the host, in one read together with
        the flags of its deferred checks; the first non-finite of those stops the run."""
        pending, self._pending = self._pending, []
        if not values and not pending:
            return []
        read = torch.stack([v.detach().float() for v in values] + [f.float() for *_, f in pending]).tolist()
        for (name, where, _), finite in zip(pending, read[len(values):]):
            if not finite:
                raise self._stop(name, where)
        return read[:len(values)]

    def early(self, name: str, tensor: torch.Tensor, where: str) -> None:
        """A step's loss, before its backward pass: under stop, checked at `settle`; under skip the
        step's gradient decides (`ok`: it is the same on every process, a loss is not)."""
        if self.policy == "stop":
            self.defer(name, tensor, where)

    def snapshot(self, module: nn.Module) -> list[torch.Tensor] | None:
        """Under skip: copies of `module`'s buffers (batch-norm statistics) from before a step,
        to put back if the step is skipped (None under stop: nothing to copy)."""
        return [b.detach().clone() for b in module.buffers()] if self.policy == "skip" else None

    def ok(self, name: str, tensor: torch.Tensor, where: str, kind: str,
           module: nn.Module | None = None, saved: list[torch.Tensor] | None = None) -> bool:
        """Whether the `kind` step ("weight step") at `where` may update: `name`'s `tensor` (its
        gradient's norm) is finite. Under stop always (the check is deferred to `settle`, which
        stops the run at the step's end); under skip a host read decides now: False with
        `module`'s buffers put back from `saved`, and one line at `patience` in a row."""
        if self.policy == "stop":
            self.defer(name, tensor, f"{where}, {kind}")
            return True
        if torch.isfinite(tensor).all():
            self.in_a_row[kind] = 0
            return True
        self.in_a_row[kind] = self.in_a_row.get(kind, 0) + 1
        if self.in_a_row[kind] >= self.patience:
            many = f"{self.in_a_row[kind]} {kind}s in a row: --nan_patience"
            raise self._stop(name, f"{where}, {kind} ({many})")
        self.skipped += 1
        if saved is not None:
            with torch.no_grad():
                for buffer, copy in zip(module.buffers(), saved):
                    buffer.copy_(copy)
        log.warning("skipped the %s of %s: %s is non-finite (%d in a row, %d skipped in all)",
                    kind, where, name, self.in_a_row[kind], self.skipped)
        return False

    def results(self) -> dict:
        """What results.json holds of it: the steps skipped (under skip only)."""
        return {"skipped_steps": self.skipped} if self.policy == "skip" else {}

    def state_dict(self) -> dict:
        return {"in_a_row": dict(self.in_a_row), "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.in_a_row, self.skipped = dict(state["in_a_row"]), state["skipped"]
