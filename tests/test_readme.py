"""Every `python <script>.py ...` (or `torchrun ... <script>.py ...`) command in the README parses
with that script's flags, and every flag of every script has its own help text."""
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

import nasbench201
import train
import train_imagenet
import train_nb201
import train_search
import visualize

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """A script of scripts/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(Path(name).stem, ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPTS = {"train_search.py": train_search, "train.py": train, "train_imagenet.py": train_imagenet,
           "train_nb201.py": train_nb201, "nasbench201.py": nasbench201, "visualize.py": visualize,
           **{f"scripts/{n}.py": load_script(f"scripts/{n}.py")
              for n in ("select_genotype", "collect_results", "make_imagenet_subset", "plot_search",
                        "campaign_status", "campaign_cli")}}


def readme_commands():
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    # `torchrun [launcher flags] script.py flags` runs the script with the same flags.
    lines = [re.sub(r"^torchrun .*?(\S+\.py)", r"python \1", line) for line in lines]
    return [line for line in lines if line.startswith("python ") and line.split()[1] in SCRIPTS]


def test_the_readme_names_only_scripts_that_exist():
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"scripts/[\w.]+\.(?:sh|py)", text))
    assert {"scripts/quickstart.sh", "scripts/run_search.sh", "scripts/select_genotype.py"} <= named
    assert all((ROOT / name).is_file() for name in named), named
    first_command = re.search(r"```bash\n(.*?)\n", text).group(1)
    assert first_command == "bash scripts/quickstart.sh"


def test_the_readme_has_the_paper_commands():
    commands = readme_commands()
    assert sum(c.startswith("python train_search.py --sal_type task") for c in commands) >= 4
    assert any("--no_restrict --cutout --auxiliary --base_dir" in c for c in commands)
    assert any("--sync_bn" in c for c in commands)  # the torchrun commands are checked too


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    # Placeholders: an epoch for the genotype name, a path for everything else.
    filled = re.sub(r"<[^>]+>", lambda m: "-1" if "genotype" in m.group() else "DIR", command)
    argv = shlex.split(filled)
    SCRIPTS[argv[1]].build_parser().parse_args(argv[2:])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_flag_has_its_own_help(name):
    actions = [a for a in SCRIPTS[name].build_parser()._actions if a.help != "==SUPPRESS=="]
    helps = [a.help for a in actions]
    assert all(helps), [a.dest for a in actions if not a.help]
    assert len(set(helps)) == len(helps), "copy-pasted help text"
