"""visualize.py draws both genotype kinds and explains a missing graphviz."""
import shutil

import pytest

from conftest import run_cli
from genotypes import save_genotype
from test_genotypes import UNRESTRICTED

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' not installed")


@needs_dot
def test_draw_named_genotype(tmp_path):
    run_cli("visualize.py", "DARTS_V2", "--out_dir", tmp_path)
    for kind in ("normal", "reduce"):
        for ext in ("pdf", "png"):
            assert (tmp_path / f"DARTS_V2_{kind}.{ext}").stat().st_size > 0


@needs_dot
def test_draw_unrestricted_genotype_file(tmp_path):
    path = tmp_path / "59.txt"
    save_genotype(UNRESTRICTED, path)
    run_cli("visualize.py", path, "--out_dir", tmp_path / "out")
    assert (tmp_path / "out" / "59_reduce.png").stat().st_size > 0


def test_missing_dot_says_how_to_install(tmp_path):
    result = run_cli("visualize.py", "DARTS_V2", "--out_dir", tmp_path, check=False,
                     env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "apt-get install graphviz" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_genotype_is_one_line(tmp_path):
    result = run_cli("visualize.py", "NOT_A_GENOTYPE", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "NOT_A_GENOTYPE" in result.stderr
