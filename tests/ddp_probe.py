"""Test helper, launched by torchrun: run one of the scripts' `main` in this process and save what
the process ended with to `$PROBE_DIR/rank<k>.pt`, so a test can compare the processes.

It records, without changing what the script does: the final supernet (alphas, masks, weights)
of train_search.py, or the final network of train.py and the indices of every training image
this process loaded. With `PROBE_KILL=<rank>:<n>[:<signal>]`, process <rank> sends itself SIGKILL
(a dying rank; SIGSTOP: a hanging one) as its n-th epoch starts.
"""
import importlib
import os
import signal
import sys
from pathlib import Path

import torch

import train_search
import utils
from plumbing import distributed
from plumbing.drivers import engine, search_run

captured = {"seen": []}


class Recorder(torch.utils.data.Dataset):
    """A training set that notes the index of every image it gives."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        captured["seen"].append(int(i))
        return self.dataset[i]


def make_loader(dataset, *args, shuffle=False, **kwargs):
    return real_make_loader(Recorder(dataset) if shuffle else dataset, *args, shuffle=shuffle, **kwargs)


def fit(model, *args, **kwargs):
    captured["model"] = distributed.unwrap(model)
    return real_fit(model, *args, **kwargs)


def finish(run, search, *args, **kwargs):
    captured["model"] = search.model
    return real_finish(run, search, *args, **kwargs)


def killer(real):
    """`real` (an epoch), with this process killed as its PROBE_KILL-th call starts."""
    calls = []

    def epoch(*args, **kwargs):
        calls.append(1)
        rank, n, *how = (os.environ.get("PROBE_KILL") or "-1:0").split(":")
        if (rank, int(n)) == (os.environ.get("RANK", "0"), len(calls)):
            os.kill(os.getpid(), getattr(signal, how[0] if how else "SIGKILL"))
        return real(*args, **kwargs)
    return epoch


engine.train_one_epoch = killer(engine.train_one_epoch)
train_search.search_one_epoch = killer(train_search.search_one_epoch)
real_make_loader, engine.make_loader = engine.make_loader, make_loader
real_fit, engine.fit = engine.fit, fit
real_finish, search_run.finish = search_run.finish, finish

if __name__ == "__main__":
    script, argv = sys.argv[1], sys.argv[2:]
    result = utils.run_cli(importlib.import_module(Path(script).stem).main, argv)
    net = captured["model"]
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({"state": state, "seen": captured["seen"], "result": result},
               Path(os.environ["PROBE_DIR"]) / f"rank{os.environ.get('RANK', '0')}.pt")
    distributed.leave(0)  # (as utils.run_script ends a torchrun process)
