"""The paper's run scripts (scripts/run_*.sh) launch commands that the scripts accept: run with
DRY_RUN=1, they print the campaign runner's jobs and their commands, which are parsed here with the
real parsers; run_search_spaces.sh's retrains come after their searches."""
import os
import re
import shlex
import subprocess
from pathlib import Path

import train
import train_imagenet
import train_search
from conftest import ROOT

PARSERS = {"train_search.py": train_search, "train.py": train, "train_imagenet.py": train_imagenet}
SPACE_DATASETS = {"s1": "cifar10 cifar100 svhn", "s2": "cifar10 cifar100 svhn", "s3": "cifar10 cifar100 svhn",
                  "s4": "cifar10 cifar100 svhn", "nb201": "cifar10 cifar100 imagenet16"}


def printed(script: str, **env) -> str:
    """What `script` prints with DRY_RUN=1: the campaign runner's jobs and their commands."""
    return subprocess.run(["bash", str(ROOT / "scripts" / script)], env=dict(os.environ, DRY_RUN="1", **env),
                          capture_output=True, text=True, check=True).stdout


def dry_run(script: str, **env) -> list[list[str]]:
    """The commands `script` would run, each as [script name, flags...] (launcher dropped)."""
    commands = []
    for line in printed(script, **env).splitlines():
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


def test_run_search_spaces_has_the_authors_settings():
    bench = str(Path(__file__))  # (parse_args checks that the file exists)
    commands = dry_run("run_search_spaces.sh", NB201_FILE=bench, NB201_SPLITS=".")
    runs = {(a.search_space, a.dataset, a.seed) for a in (train_search.parse_args(c[1:]) for c in commands)}
    assert runs == {(s, d, seed) for s, ds in SPACE_DATASETS.items() for d in ds.split() for seed in (0, 1, 2)}
    assert len(commands) == len(runs) == 45
    for command in commands:
        a = train_search.parse_args(command[1:])  # the flags completed by the space's recipe
        assert (a.sal_type, a.num_compare, a.batch_size, a.init_channels) == ("task", 5, 64, 16)
        if a.search_space == "nb201":
            assert (a.epochs, a.warmup, a.nesterov, a.weight_decay, a.reg_alpha) == (40, 10, True, 5e-4, 0.0)
            assert (a.lr_schedule, a.step_order, a.scoring_transform) == ("warmup_cosine_nb201", "weight_first", "test")
            assert (a.layers, a.nb201_file, a.nb201_splits, a.data_split) == (5, bench, ".", "benchmark")
        else:
            assert (a.epochs, a.warmup, a.drop_path_prob, a.reg_alpha, a.nb201_file) == (50, 20, 0.2, 0.1, None)


def test_run_search_spaces_evaluates_in_robustdarts_sizes(tmp_path):
    runs = []
    for name in ("search-s3_cifar10-20240101-000000-task0", "search-s1_svhn-20240101-000000-task1",
                 "search-s2_cifar100-20240101-000000-task0", "search-s4_cifar10-20240101-000000-task2"):
        (tmp_path / name).mkdir()
        if "s4" not in name:  # the s4 search has not finished: skipped
            (tmp_path / name / "genotype.json").write_text("{}")
        runs.append(str(tmp_path / name))
    commands = dry_run("run_search_spaces.sh", STAGE="eval", RUNS=" ".join(runs))
    sizes = {c[c.index("--base_dir") + 1]: train.build_parser().parse_args(c[1:]) for c in commands}
    assert [(a.dataset, a.layers, a.init_channels, a.cutout, a.auxiliary) for a in sizes.values()] == [
        ("cifar10", 20, 36, True, True), ("svhn", 8, 16, True, True), ("cifar100", 8, 16, True, True)]
    assert list(sizes) == runs[:3]


def jobs_of(script: str, **env) -> dict[str, str]:
    """{job: the jobs it comes after} as the campaign runner prints them with DRY_RUN=1."""
    header = r"^# (\S+) \(\d+ GPUs?(?: after (.*?))?\): start$"
    return dict(re.findall(header, printed(script, **env), flags=re.M))


def test_run_search_spaces_goes_through_the_runner():
    env = dict(STAGE="search eval", SPACES="s2 nb201", DATASETS="cifar100", SEEDS="0 1")
    assert jobs_of("run_search_spaces.sh", **env) == {  # each S1-S4 cell trained after its search
        "search-s2_cifar100-seed0": "", "search-s2_cifar100-seed1": "", "search-nb201_cifar100-seed0": "",
        "search-nb201_cifar100-seed1": "", "retrain-search-s2_cifar100-seed0": "search-s2_cifar100-seed0",
        "retrain-search-s2_cifar100-seed1": "search-s2_cifar100-seed1"}
    commands = dry_run("run_search_spaces.sh", **env, LAYERS="20", CHANNELS="36")
    args = train.build_parser().parse_args(commands[-1][1:])
    assert (args.dataset, args.layers, args.init_channels, args.genotype_names) == ("cifar100", 20, 36, [-1])
    on_two = printed("run_search_spaces.sh", NPROC="2", SPACES="s1", DATASETS="svhn", SEEDS="0").splitlines()
    assert on_two[1].startswith("torchrun --standalone --nproc_per_node 2 train_search.py --search_space s1 ")


def test_run_fulltrain_imagenet_selects_among_the_finished_searches_first(tmp_path):
    for name in ("search-s1-20240101-000000-task0", "search-s2-20240101-000000-task0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "genotype.json").write_text("{}")
    (tmp_path / "search-s1r-20240101-000000-task0").mkdir()  # not finished: left out
    assert jobs_of("run_fulltrain_imagenet.sh", CKPT=str(tmp_path)) == {"select": "", "imagenet": "select"}
    out = printed("run_fulltrain_imagenet.sh", CKPT=str(tmp_path))
    (select,) = [shlex.split(line) for line in out.splitlines() if "select_genotype.py" in line]
    assert select[2:4] == [str(tmp_path / "search-s1-20240101-000000-task0"),
                           str(tmp_path / "search-s2-20240101-000000-task0")]
    assert select[select.index("--out_dir") + 1] == str(tmp_path / "selection")
