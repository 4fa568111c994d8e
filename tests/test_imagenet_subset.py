"""scripts/make_imagenet_subset.py: per-class counts, determinism, link modes, subset.json, errors."""
import json
import os

import pytest

from conftest import make_image_folder, run_cli
from data import get_datasets

SCRIPT = "scripts/make_imagenet_subset.py"
CLASSES, TRAIN, VAL = 4, 20, 5


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A fake ImageNet: 4 classes of 20 train and 5 val JPEGs, the same file names in every class."""
    return make_image_folder(tmp_path_factory.mktemp("imagenet"), size=16, classes=CLASSES,
                             train=TRAIN, val=VAL)


def subset(src, dst, *args, check=True, env=None):
    """Run the script from `src` into `dst`; return the completed process."""
    return run_cli(SCRIPT, "--src", src, "--dst", dst, *args, check=check, env=env)


def chosen(dst, split="train") -> dict[str, list[str]]:
    """{class: sorted file names} under `dst/split`."""
    return {c.name: sorted(f.name for f in c.iterdir()) for c in sorted((dst / split).iterdir())}


def test_counts_manifest_and_loader(src, tmp_path):
    dst = tmp_path / "sub"
    result = subset(src, dst, "--fraction", "0.25", "--seed", "3")
    picked = chosen(dst)
    assert list(picked) == [f"c{k}" for k in range(CLASSES)]
    assert all(len(files) == round(0.25 * TRAIN) for files in picked.values())
    assert chosen(dst, "val") == {f"c{k}": sorted(f"{i}.jpg" for i in range(VAL)) for k in range(CLASSES)}
    manifest = json.loads((dst / "subset.json").read_text())
    assert manifest["source"] == str(src) and manifest["seed"] == 3 and manifest["mode"] == "symlink"
    assert manifest["fraction"] == 0.25 and manifest["val_fraction"] == 1.0
    assert manifest["counts"]["train"] == {c: 5 for c in picked}
    assert manifest["source_counts"]["train"] == {c: TRAIN for c in picked}
    assert manifest["files"]["train"] == [f"train/{c}/{f}" for c, files in picked.items() for f in files]
    assert not list(dst.glob(".subset.json.*"))  # the temporary file was renamed away
    link = dst / manifest["files"]["train"][0]
    assert link.is_symlink() and os.path.isabs(os.readlink(link))
    assert link.read_bytes() == (src / manifest["files"]["train"][0]).read_bytes()
    assert f"--data {dst} --train_portion 0.8" in result.stdout
    train, val, num_classes = get_datasets("folder", str(dst), image_size=16)
    assert (len(train), len(val), num_classes) == (CLASSES * 5, CLASSES * VAL, CLASSES)
    assert train[0][0].shape == (3, 16, 16)


def test_deterministic_per_class_and_per_seed(src, tmp_path):
    subset(src, tmp_path / "a", "--fraction", "0.25")
    subset(src, tmp_path / "b", "--fraction", "0.25", env={"PYTHONHASHSEED": "123"})  # not hash()
    subset(src, tmp_path / "c", "--fraction", "0.25", "--seed", "1")
    first = chosen(tmp_path / "a")
    assert chosen(tmp_path / "b") == first
    assert chosen(tmp_path / "c") != first
    # Every class holds the same file names: the class name must change the draw.
    assert len({tuple(files) for files in first.values()}) > 1
    # Pinned: the draw is a function of (seed, class name, file names) only, on any machine.
    assert first["c0"] == ["10.jpg", "12.jpg", "15.jpg", "18.jpg", "4.jpg"]
    assert first["c1"] == ["10.jpg", "15.jpg", "18.jpg", "4.jpg", "5.jpg"]


def test_val_fraction_and_at_least_one_per_class(src, tmp_path):
    dst = tmp_path / "sub"
    subset(src, dst, "--fraction", "0.01", "--val_fraction", "0.4")
    assert all(len(files) == 1 for files in chosen(dst).values())  # round(0.2) = 0, kept at 1
    assert all(len(files) == round(0.4 * VAL) for files in chosen(dst, "val").values())
    manifest = json.loads((dst / "subset.json").read_text())
    assert manifest["counts"]["val"] == {f"c{k}": 2 for k in range(CLASSES)}


@pytest.mark.parametrize("mode", ["hardlink", "copy"])
def test_hardlink_and_copy(src, tmp_path, mode):
    dst = tmp_path / "sub"
    subset(src, dst, "--fraction", "0.5", "--mode", mode)
    files = list((dst / "train").rglob("*.jpg"))
    assert len(files) == CLASSES * TRAIN // 2
    for path in files:
        original = src / path.relative_to(dst)
        assert not path.is_symlink() and path.read_bytes() == original.read_bytes()
        assert (path.stat().st_ino == original.stat().st_ino) == (mode == "hardlink")


def error_line(result) -> str:
    """The single stderr line of a failed run, after checking the exit code."""
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(("error: ", "make_imagenet_subset.py: error: "))
    assert "Traceback" not in result.stderr
    return line


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.1", "abc"])
def test_bad_fraction(src, tmp_path, fraction):
    assert "fraction" in error_line(subset(src, tmp_path / "sub", "--fraction", fraction, check=False))
    assert not (tmp_path / "sub").exists()


def test_missing_or_wrong_source(src, tmp_path):
    line = error_line(subset(tmp_path / "nowhere", tmp_path / "sub", "--fraction", "0.5", check=False))
    assert "must hold train/ and val/ with one sub-folder per class" in line
    line = error_line(subset(src / "train", tmp_path / "sub", "--fraction", "0.5", check=False))
    assert "must hold train/ and val/" in line
    bad = make_image_folder(tmp_path / "bad", size=8, classes=2, train=2, val=1)
    (bad / "train" / "c2").mkdir()
    (bad / "train" / "c2" / "notes.txt").write_text("no images here")
    assert "no images" in error_line(subset(bad, tmp_path / "sub", "--fraction", "0.5", check=False))
    assert "overlaps" in error_line(subset(src, src, "--fraction", "0.5", "--force", check=False))


def test_non_empty_destination_needs_force(src, tmp_path):
    dst = tmp_path / "sub"
    subset(src, dst, "--fraction", "0.5")
    (dst / "keep.txt").write_text("not ours")
    assert "--force" in error_line(subset(src, dst, "--fraction", "0.25", check=False))
    assert all(len(files) == 10 for files in chosen(dst).values())  # untouched
    subset(src, dst, "--fraction", "0.25", "--mode", "copy", "--force")
    assert all(len(files) == 5 for files in chosen(dst).values())
    assert json.loads((dst / "subset.json").read_text())["mode"] == "copy"
    assert (dst / "keep.txt").read_text() == "not ours"
    assert len(list(src.rglob("*.jpg"))) == CLASSES * (TRAIN + VAL)  # the source is intact
