"""The images of a search: which train the weights, which train alpha, and which score the
saliency, s1r's comparisons and the validation. The DARTS split of the training set
(`--train_portion`), or NAS-Bench-201's own split files (`--nb201_splits`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from data import DatasetMissing, get_datasets, sample_order, split_indices, transforms, with_transform

# NAS-Bench-201's split files (they come with its code: `configs/nas-benchmark/` of the
# NAS-Bench-201 and AutoDL-Projects repositories): the file, the key of the weights' part of the
# training set (None: all of it) and the key of the part alpha is searched on, which indexes the
# training set when the weights have a key and the TEST set otherwise ("xvalid").
NB201_SPLITS = {"cifar10": ("cifar-split.txt", "train", "valid"),
                "cifar100": ("cifar100-test-split.txt", None, "xvalid"),
                "imagenet16": ("imagenet-16-120-test-split.txt", None, "xvalid")}
SPLITS_WHERE = ("it comes with NAS-Bench-201's code (configs/nas-benchmark/ of the NAS-Bench-201 or "
                "AutoDL-Projects repositories on GitHub)")


def read_split_file(path: str | Path, keys: list[str], sizes: dict[str, int]) -> dict[str, list[int]]:
    """The index lists `keys` of a NAS-Bench-201 split file (JSON: each name maps to
    [type, list]), each checked against `sizes[key]` images; DatasetMissing in one line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetMissing(f"no split file '{path}'; {SPLITS_WHERE}")
    try:
        content = json.loads(path.read_text())
        lists = {key: [int(i) for i in content[key][1]] for key in keys}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as e:
        raise DatasetMissing(f"{path}: not a NAS-Bench-201 split file with {' and '.join(keys)} "
                             f"index lists ({type(e).__name__}: {e})") from None
    for key, indices in lists.items():
        bad = [i for i in indices if not 0 <= i < sizes[key]]
        if bad or not indices:
            problem = f"holds index {bad[0]}, outside the {sizes[key]} images it indexes" if bad else "is empty"
            raise DatasetMissing(f"{path}: '{key}' {problem}")
    return lists


@dataclass
class SearchData:
    """The images of a search: the weight steps', the architecture steps' (training transform)
    and the scoring set of the saliency passes, s1r's comparisons and the validation (the
    architecture set itself, or the same images seen with the test transform)."""
    weights: Dataset
    arch: Dataset
    scoring: Dataset
    num_classes: int
    split: str  # which split was used, for the run directory


def search_data(name: str, root: str, *, split: str, splits_dir: str | None, portion: float,
                subset: int | None, scoring_transform: str, cutout: bool = False, cutout_length: int = 16,
                image_size: int = 32, flip: bool = True) -> SearchData:
    """The search's data. `split` "train_portion": the DARTS split of the training set (the first
    `portion` for the weights, the rest for alpha and scoring). "benchmark": NAS-Bench-201's split
    files in `splits_dir` (without it, the train_portion split, and `split` says so).
    `scoring_transform` "test": the scoring set sees no augmentation."""
    train_tf, test_tf = transforms(name, cutout=cutout, cutout_length=cutout_length, image_size=image_size, flip=flip)
    use_files = split == "benchmark" and splits_dir is not None
    if use_files and name not in NB201_SPLITS:
        raise DatasetMissing(f"--nb201_splits: NAS-Bench-201 has split files for {', '.join(NB201_SPLITS)}, not {name}")
    if use_files and not Path(splits_dir).is_dir():
        raise DatasetMissing(f"--nb201_splits {splits_dir}: no such folder; it holds the split files: {SPLITS_WHERE}")
    file, weight_key, arch_key = NB201_SPLITS[name] if use_files else (None, None, None)
    train_set, test_set, num_classes = get_datasets(name, root, cutout=cutout, cutout_length=cutout_length,
                                                    image_size=image_size, test=use_files and weight_key is None,
                                                    flip=flip)
    if use_files:
        source = train_set if weight_key else test_set  # what the architecture's indices point into
        keys = [k for k in (weight_key, arch_key) if k]
        lists = read_split_file(Path(splits_dir) / file, keys, {k: len(source) for k in keys})
        w_idx, a_idx = lists.get(weight_key), lists[arch_key]
        label = f"benchmark ({file}: {len(w_idx) if w_idx else len(train_set)} weight images, {len(a_idx)} "
        label += f"{'validation' if weight_key else 'test-set xvalid'} images)"
    else:
        source = train_set
        w_idx, a_idx = split_indices(sample_order(train_set)[:subset], portion)
        label = "train_portion" if split == "train_portion" else "train_portion (no --nb201_splits given)"
    weights = train_set if w_idx is None else Subset(train_set, w_idx)
    arch = Subset(with_transform(source, train_tf), a_idx) if source is not train_set else Subset(train_set, a_idx)
    scoring = arch if scoring_transform == "train" else Subset(with_transform(source, test_tf), a_idx)
    return SearchData(weights, arch, scoring, num_classes, label)
