"""The paper's run scripts (scripts/run_*.sh) launch commands that the scripts accept: run with
DRY_RUN=1, they print their commands, which are parsed here with the real parsers."""
import os
import re
import shlex
import subprocess

from conftest import ROOT

import train
import train_imagenet
import train_search

PARSERS = {"train_search.py": train_search, "train.py": train, "train_imagenet.py": train_imagenet}


def dry_run(script: str, **env) -> list[list[str]]:
    """The commands `script` would run, each as [script name, flags...] (launcher dropped)."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / script)], env=dict(os.environ, DRY_RUN="1", **env),
                         capture_output=True, text=True, check=True).stdout
    commands = []
    for line in out.splitlines():
        argv = shlex.split(re.sub(r"^(torchrun .*?|python )(\S+\.py)", r"\2", line))
        if argv and argv[0] in PARSERS:
            PARSERS[argv[0]].build_parser().parse_args(argv[1:])  # exits (fails the test) if refused
            commands.append(argv)
    return commands


def test_run_search_has_every_variant_and_seed():
    commands = dry_run("run_search.sh")
    assert len(commands) == 4 * 3
    flags = {(" ".join(c[1:c.index("--data")]), c[c.index("--seed") + 1]) for c in commands}
    variants = {"--sal_type task", "--sal_type task --sal_second", "--sal_type task --num_compare 5",
                "--sal_type task --num_compare 5 --no_restrict"}
    assert flags == {(v, s) for v in variants for s in "012"}
    assert all(c[0] == "train_search.py" for c in dry_run("run_search.sh", NPROC="2", SEEDS="0"))


def test_run_fulltrain_trains_each_finished_search(search_runs):
    commands = dry_run("run_fulltrain.sh", RUNS=" ".join(str(p) for p in search_runs.values()))
    assert [c[c.index("--base_dir") + 1] for c in commands] == [str(p) for p in search_runs.values()]
    args = train.build_parser().parse_args(commands[0][1:])
    assert (args.cutout, args.auxiliary, args.layers, args.init_channels) == (True, True, 20, 36)


def test_run_fulltrain_imagenet_trains_the_selected_genotype():
    (command,) = dry_run("run_fulltrain_imagenet.sh", BASE_PATH="ckpt/search-x", GENOTYPE_NAME="59")
    args = train_imagenet.build_parser().parse_args(command[1:])
    assert (args.base_path, args.genotype_name, args.batch_size) == ("ckpt/search-x", 59, 768)
    assert args.auxiliary
