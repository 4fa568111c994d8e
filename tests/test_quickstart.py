"""scripts/quickstart.sh in a reduced form (fewer images, 2-node cells, one training epoch):
the whole pipeline runs, pruning reaches the final cell, and the outputs are where it says."""
import json
import os
import shutil
import subprocess

from conftest import ROOT, THREADS


def test_quickstart_pipeline(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), SUBSET="64", BATCH="8", STEPS="2", WARMUP="1",
               SEARCH_EPOCHS="10", TRAIN_EPOCHS="1", OMP_NUM_THREADS=THREADS)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart.sh")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "requirements: already installed" in out  # nothing to install twice
    (search,) = tmp_path.glob("search-quickstart-*")
    found = json.loads((search / "results.json").read_text())
    assert found["pruning_finished"] and found["live_ops"] == [4, 4]  # the DARTS cell of 2 nodes
    assert json.loads((search / "genotype.json").read_text())["normal"] == found["genotype"]["normal"]
    (evaluation,) = search.glob("eval-*")
    trained = json.loads((evaluation / "results.json").read_text())
    assert f"test accuracy:   {trained['final_test_top1']:.2f}%" in out
    assert f"genotype:        {search / 'genotype.json'}" in out
    if shutil.which("dot"):
        assert (search / "genotype_normal.png").exists() and str(search / "genotype_normal.png") in out
    assert f"summary figure:  {search / 'summary.png'}" in out and (search / "summary.png").stat().st_size > 5000
