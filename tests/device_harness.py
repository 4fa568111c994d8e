"""A GPU's rules on the CPU: the device harness of the test suite.

The CPU suite cannot see a device mix-up (a mask made on the CPU meeting one on the GPU, a CPU
tensor handed to NCCL) or count what a GPU pays for (host-device synchronisations). This harness
makes both visible:

- `meta=True`: every tensor that the project's own code creates with a factory (`torch.tensor`,
  `torch.zeros`, `torch.arange`, ...) without naming a device lands on the `meta` device. Mixing
  it with a real tensor then raises "Expected all tensors to be on the same device" (or reading
  it, "cannot be called on meta tensors"), as the same line would on CUDA, where the real tensor
  is on the GPU and the unnamed one on the CPU. Tensors made by PyTorch itself, by torchvision's
  transforms or the loaders are untouched: only calls whose caller is a file of this repository
  (outside tests/) are rewritten.
- `counts`: every host read the project's code makes (`.item()`, `.tolist()`, `bool()`, `float()`,
  `int()`, `.cpu()`, `.numpy()`, `torch.equal`, and `torch.cuda.synchronize`), by call site; on a
  GPU each one waits for the device's queue to drain.

Run a script under it: `python tests/device_harness.py train_search.py --flags ...` (torchrun
takes the same: `torchrun ... tests/device_harness.py train.py ...`).
"""
from __future__ import annotations

import runpy
import sys
import warnings
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

FACTORIES = ("tensor", "as_tensor", "zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint",
             "randperm", "eye", "linspace", "logspace", "empty_strided", "scalar_tensor", "tril_indices",
             "triu_indices")
# Tensor methods that hand a value to the host (on a GPU: wait for every queued kernel).
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "equal",
              "allclose")


def _is_project(filename: str, extra: tuple[str, ...]) -> bool:
    """A file of this repository's code (not its tests, not an installed package), or one of `extra`."""
    if filename in extra:
        return True
    return (filename.startswith(f"{ROOT}/") and not filename.startswith(f"{TESTS}/")
            and "site-packages" not in filename)


class DeviceHarness:
    """`with DeviceHarness(meta=True, count=True) as h:` ...; `h.syncs` counts host reads by
    'file:line name' of the project's code. `also` adds files (a test's own) to the project's.

    The functions are patched for the duration (torch's factories, the Tensor methods that read
    a value, torch.cuda.synchronize), so that the rest of PyTorch runs at full speed: a
    `TorchFunctionMode` would see every operation and make an end-to-end run several times slower.
    """

    def __init__(self, meta: bool = True, count: bool = False, also: tuple[str, ...] = ()):
        self.meta, self.count, self.also = meta, count, tuple(str(Path(p).resolve()) for p in also)
        self.syncs: Counter = Counter()
        self._saved: list[tuple[object, str, object]] = []

    def _patch(self, owner, name: str, make) -> None:
        original = getattr(owner, name)
        self._saved.append((owner, name, original))
        setattr(owner, name, make(original))

    def __enter__(self):
        if self.meta:
            # Forward-mode AD (s2's Hessian) scripts its decompositions with torch.jit on first use,
            # which cannot compile a patched factory: load them before patching.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.autograd.forward_ad._maybe_load_decompositions()
            for name in FACTORIES:
                self._patch(torch, name, self._factory)
        if self.count:
            for name in HOST_READS:
                self._patch(torch.Tensor, name, self._counted)
            for owner, name in ((torch, "equal"), (torch, "allclose"), (torch.cuda, "synchronize")):
                self._patch(owner, name, self._counted)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def _factory(self, original):
        from_data = original in (torch.tensor, torch.as_tensor)

        def create(*args, **kwargs):
            if kwargs.get("device") is None and not (from_data and args and isinstance(args[0], torch.Tensor)):
                if _is_project(sys._getframe(1).f_code.co_filename, self.also):
                    kwargs["device"] = "meta"
            return original(*args, **kwargs)
        return create

    def _counted(self, original):
        name = original.__name__

        def read(*args, **kwargs):
            frame = sys._getframe(1)
            if _is_project(frame.f_code.co_filename, self.also):
                where = Path(frame.f_code.co_filename)
                where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where.name
                self.syncs[f"{where}:{frame.f_lineno} {name}"] += 1
            return original(*args, **kwargs)
        return read

    def total(self) -> int:
        """Host reads counted so far."""
        return sum(self.syncs.values())


def main() -> None:
    """`python tests/device_harness.py SCRIPT ARGS...`: run SCRIPT as `__main__` under the harness."""
    script, *argv = sys.argv[1:]
    sys.argv = [script, *argv]
    sys.path.insert(0, str(ROOT))
    with DeviceHarness(meta=True):
        runpy.run_path(str(Path(script).resolve()), run_name="__main__")


if __name__ == "__main__":
    main()
