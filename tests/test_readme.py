"""The README and docs/*.md: every `python <script>.py ...` (or `torchrun ... <script>.py ...`)
command in a bash block parses with that script's flags, every file of the repository they name
exists, every relative link points to an existing file (and heading), the README stays a first
screen with the paper's commands; and every flag of every script has its own one-line help text
of at most 100 characters."""
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
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


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

# The original README's commands (the authors'): each must stay on the first screen, as written.
PAPER_COMMANDS = [
    "python train_search.py --sal_type task",
    "python train_search.py --sal_type task --sal_second",
    "python train_search.py --sal_type task --num_compare 5",
    "python train_search.py --sal_type task --num_compare 5 --no_restrict",
    "python train.py --mode train --cutout --auxiliary --base_dir <path_to_the_dir_of_model>",
    "python train_imagenet.py --mode train --auxiliary --base_path <path_to_the_dir_of_model> "
    "--genotype_name <the_name_of_genotype_by_model_selection>",
    "python train.py --mode train --no_restrict --cutout --auxiliary --base_dir <path_to_the_dir_of_model>",
    "python train_imagenet.py --mode train --no_restrict --auxiliary --base_path <path_to_the_dir_of_model> "
    "--genotype_name <the_name_of_genotype_by_model_selection>",
]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def commands(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [" ".join(line.split("#")[0].split()) for block in blocks for line in block.splitlines()]
    # `torchrun [launcher flags] script.py flags` runs the script with the same flags.
    lines = [re.sub(r"^torchrun .*?(\S+\.py)", r"python \1", line) for line in lines]
    return [line for line in lines if line.startswith("python ") and line.split()[1] in SCRIPTS]


def readme_commands():
    return commands(README)


def test_there_are_docs():
    assert len(DOCS) > 1 and all(rel(p).startswith("docs/") for p in DOCS[1:])


def test_the_readme_is_a_first_screen():
    assert len(README.read_text().splitlines()) <= 200


def test_the_readme_starts_with_the_quick_start():
    text = README.read_text()
    named = set(re.findall(r"scripts/[\w.]+\.(?:sh|py)", text))
    assert {"scripts/quickstart.sh", "scripts/run_search.sh", "scripts/select_genotype.py"} <= named
    first_command = re.search(r"```bash\n(.*?)\n", text).group(1)
    assert first_command == "bash scripts/quickstart.sh"


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_the_docs_name_only_files_that_exist(path):
    named = set(re.findall(r"\b((?:scripts|bench|tests|plumbing)/[\w./]+\.(?:sh|py))", path.read_text()))
    assert all((ROOT / n).is_file() for n in named), sorted(n for n in named if not (ROOT / n).is_file())


def test_the_readme_has_the_paper_commands():
    commands = readme_commands()
    assert all(c in commands for c in PAPER_COMMANDS), [c for c in PAPER_COMMANDS if c not in commands]
    assert sum(c.startswith("python train_search.py --sal_type task") for c in commands) >= 4
    assert any("--no_restrict --cutout --auxiliary --base_dir" in c for c in commands)
    assert any("--sync_bn" in c for c in commands)  # the torchrun commands are checked too


@pytest.mark.parametrize("path, command", [(p, c) for p in DOCS for c in commands(p)],
                         ids=lambda x: rel(x) if isinstance(x, Path) else x)
def test_command_parses(path, command):
    # Placeholders: an epoch for the genotype name, a path for everything else.
    filled = re.sub(r"<[^>]+>", lambda m: "-1" if "genotype" in m.group() else "DIR", command)
    argv = shlex.split(filled)
    SCRIPTS[argv[1]].build_parser().parse_args(argv[2:])


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2, ...
    for repeats; headings inside code blocks are not headings."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_relative_links_point_to_files_and_headings_that_exist(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, broken


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_flag_has_its_own_help(name):
    parser = SCRIPTS[name].build_parser()
    actions = [a for a in parser._actions if a.help != "==SUPPRESS=="]
    helps = [a.help for a in actions]
    assert all(helps), [a.dest for a in actions if not a.help]
    assert len(set(helps)) == len(helps), "copy-pasted help text"
    # One short line each, as --help shows it (%-formatted as argparse does; the "(default: ...)" that
    # the formatter adds is not counted); the details are in docs/*.md.
    shown = {a.dest: a.help % {**vars(a), "prog": parser.prog} for a in actions}
    assert all(len(h) <= 100 and "\n" not in h for h in shown.values()), \
        {d: h for d, h in shown.items() if len(h) > 100 or "\n" in h}
