"""The structure the code keeps: the method at the root (at most 18 modules), the plumbing in
`plumbing/` with its drivers in `plumbing/drivers/`, every import pointing down the layers (no
cycle between modules or folders), no module but search_spaces.py that asks a space for its
name, no file name of a run directory spelled outside rundir.py, no source file over 400 lines."""
import ast
import re

import pytest

from conftest import ROOT
from plumbing import rundir
from search_spaces import SPACES

PACKAGE = sorted(p for p in (ROOT / "plumbing").rglob("*.py"))
SOURCES = sorted([*ROOT.glob("*.py"), *PACKAGE, *(ROOT / "scripts").glob("*.py"), *(ROOT / "bench").glob("*.py")])
# Dotted module name -> file, for the root and the package (`plumbing.drivers.engine`).
MODULES = {".".join(p.relative_to(ROOT).with_suffix("").parts): p
           for p in [*ROOT.glob("*.py"), *PACKAGE] if p.name != "__init__.py"}


def imports(path) -> set[str]:
    """The project modules `path` imports, at the top or inside a function (`from plumbing import
    rundir` imports plumbing.rundir)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found & set(MODULES)


GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}


def layer(name: str) -> int:
    """0 the base (plumbing/), 1 the science (the root's modules that others import), 2 the
    drivers (plumbing/drivers/), 3 the entry scripts (root modules no module imports)."""
    if name.startswith("plumbing.drivers."):
        return 2
    if name.startswith("plumbing."):
        return 0
    return 1 if any(name in deps for deps in GRAPH.values()) else 3


def test_no_import_cycle():
    done, stack = set(), []

    def visit(name):
        if name in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(name):] + [name]))
        if name in done:
            return
        stack.append(name)
        for other in sorted(GRAPH[name]):
            visit(other)
        stack.pop()
        done.add(name)

    for name in sorted(GRAPH):
        visit(name)


def test_every_import_points_down_the_layers():
    """The base imports only the base, the science no driver, a driver no entry script: no cycle
    between the folders (with the root's entry scripts above the drivers they call)."""
    up = [f"{name} -> {dep}" for name, deps in GRAPH.items() for dep in deps if layer(dep) > layer(name)]
    assert not up, up
    assert {layer(n) for n in ("train_search", "train", "train_imagenet", "train_nb201")} == {3}
    assert {layer(n) for n in ("model_search", "saliency", "utils", "genotypes")} == {1}


def test_the_root_shows_the_method():
    root = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(root) <= 18, root
    design = {"train_search", "train", "train_imagenet", "model_search", "model", "operations", "genotypes",
              "architect", "saliency", "utils"}
    assert design <= {n[:-3] for n in root}


def test_the_visualiser_and_the_networks_do_not_need_each_other():
    assert "visualize" not in imports(MODULES["search_spaces"]) | imports(MODULES["model"])


# `x == "nb201"`, `"darts" != x`, `x.name ==`, `search_space ==`: asking a space for its name
# (s1 and s2 are also the names of saliency variants, so they are left out of the literals).
NAME = "|".join(s for s in SPACES if s not in ("s1", "s2"))
ASKS_NAME = re.compile(rf"""(==|!=)\s*["']({NAME})["']|["']({NAME})["']\s*(==|!=)"""
                       r"""|\.name\s*[!=]=|search_space\s*[!=]=""")
READS_NAMES = {"search_spaces.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_only_search_spaces_asks_a_space_for_its_name(path):
    if path.name in READS_NAMES:
        return
    lines = [f"{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
             if ASKS_NAME.search(line)]
    assert not lines, lines


RUN_FILES = {rundir.ARGS, rundir.LOG, rundir.CHECKPOINT, rundir.RESULTS, rundir.SEARCH_SPACE, rundir.FINAL_ARCH,
             rundir.PRUNE_EVENTS, rundir.SALIENCY, rundir.AUDIT, rundir.EPOCHS, rundir.RESULTS_CSV}
# a run directory name being built or matched: "search-", "eval-*", ...
RUN_NAMES = re.compile(rf"^({rundir.SEARCH}|{rundir.EVAL}|{rundir.NB201_EVAL}|{rundir.IMAGENET_EVAL})-(\*|$)")


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name != "rundir.py"], ids=lambda p: p.name)
def test_run_directory_names_are_spelled_in_rundir_only(path):
    """String constants in code (not docstrings or help texts, which may name a file for people)
    that are a run directory's file name or a run directory name pattern."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in RUN_FILES or RUN_NAMES.match(node.value):
                found.append(f"{node.lineno}: {node.value!r}")
    assert not found, found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_source_file_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


# torch's factories: on a GPU, one that names no device makes a CPU tensor, which then meets the
# run's CUDA tensors (tests/device_harness.py catches it at run time; this, before).
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint",
             "randperm", "eye", "linspace", "logspace", "empty_strided", "scalar_tensor"}
COLLECTIVES = {"all_reduce", "broadcast", "all_gather", "all_gather_object", "broadcast_object_list", "reduce",
               "gather", "scatter", "reduce_scatter", "all_to_all", "barrier", "send", "recv"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_tensor_names_its_device(path):
    found = [f"{node.lineno}: torch.{node.func.attr}" for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
             and not any(k.arg == "device" for k in node.keywords)]
    assert not found, found


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name != "distributed.py" and p.parent.name != "bench"],
                         ids=lambda p: p.name)
def test_collectives_are_called_in_distributed_only(path):
    """distributed.py puts what it hands to a collective on the collective's device (NCCL: CUDA)."""
    found = [f"{node.lineno}: dist.{node.func.attr}" for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in COLLECTIVES and isinstance(node.func.value, ast.Name)
             and node.func.value.id == "dist"]
    assert not found, found
