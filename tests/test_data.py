"""The real loaders: CIFAR-10 from its on-disk pickles, ImageFolder, digits, splits, errors."""
import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets as dset

import data
from data import Cutout, DatasetMissing, get_datasets, holdout_split, sample_order, split_indices


def write_cifar10(root, per_batch=6):
    """The `cifar-10-batches-py` layout: five training pickles, a test pickle, batches.meta
    (str keys, as Python 2 pickles read with latin1 give)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.randint(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.randint(0, 10, per_batch).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return root


@pytest.fixture
def no_md5(monkeypatch):
    """Hand-made pickles cannot match torchvision's MD5 sums: skip only that check."""
    monkeypatch.setattr(dset.cifar, "check_integrity", lambda *args, **kwargs: True)


def test_cifar10_loads_from_its_pickles(tmp_path, no_md5):
    train, test, classes = get_datasets("cifar10", str(write_cifar10(tmp_path)), cutout=True)
    assert classes == 10 and len(train) == 30 and len(test) == 6
    x, y = train[0]
    assert x.shape == (3, 32, 32) and isinstance(y, int)
    assert test[0][0].shape == (3, 32, 32)


def test_missing_cifar_offline_says_where_to_put_it(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(dset.CIFAR10, "download", offline)
    with pytest.raises(DatasetMissing) as info:
        get_datasets("cifar10", str(tmp_path))
    message = str(info.value)
    assert "cifar-10-batches-py" in message and str(tmp_path) in message and "\n" not in message


def test_digits_split_is_fixed_and_disjoint():
    train, test, classes = get_datasets("digits", "unused")
    assert (len(train), len(test), classes) == (1437, 360, 10)
    assert train[0][0].shape == (3, 8, 8)
    from sklearn.datasets import load_digits as sklearn_digits

    images, labels = data.load_digits()  # read without importing scikit-learn
    assert np.array_equal(images, sklearn_digits().images) and np.array_equal(labels, sklearn_digits().target)
    again, _, _ = get_datasets("digits", "unused")
    assert torch.equal(again.images, train.images)


def test_search_split_is_disjoint_and_covers_the_set():
    first, second = split_indices(101, 0.5)
    assert len(first) == 50 and set(first).isdisjoint(second) and len(first) + len(second) == 101


def test_folder_splits_hold_every_class(tmp_path):
    """ImageFolder lists files class by class: a split in that order would give the weights and
    the architecture (or training and validation) different classes."""
    from conftest import make_image_folder

    root = make_image_folder(tmp_path, size=8, classes=4, train=10, val=1)
    train, test, _ = get_datasets("folder", str(root), image_size=8)
    order = sample_order(train)
    assert sorted(order) == list(range(40)) and order == sample_order(train)  # fixed permutation
    for part in split_indices(order, 0.5) + split_indices(order[:30], 0.5):
        assert {train.targets[i] for i in part} == {0, 1, 2, 3}
    _, valid = holdout_split(train, 0.5, test.transform)
    assert {train.targets[i] for i in valid.indices} == {0, 1, 2, 3}
    assert sample_order(get_datasets("digits", "unused")[0])[:3] == [0, 1, 2]  # the DARTS order


def test_holdout_split_uses_evaluation_transform(tmp_path):
    from conftest import make_image_folder

    root = make_image_folder(tmp_path, size=40, classes=2, train=5, val=2)
    train, test, _ = get_datasets("folder", str(root), image_size=32)
    part, valid = holdout_split(train, 0.2, test.transform)
    assert len(part) == 8 and len(valid) == 2
    assert valid.dataset.transform is test.transform and part.dataset.transform is train.transform
    assert holdout_split(train, 0.0, test.transform) == (train, None)


def test_cutout_zeroes_a_square():
    np.random.seed(0)
    img = Cutout(4)(torch.ones(3, 16, 16))
    zeros = (img == 0).all(0)
    assert 4 <= int(zeros.sum()) <= 16 and torch.equal(img[0] == 0, zeros)


def test_imagenet16_reads_the_pickles_and_keeps_120_classes(tmp_path):
    import pickle

    from conftest import make_imagenet16

    root = make_imagenet16(tmp_path / "ImageNet16")
    train, test, classes = get_datasets("imagenet16", str(root), cutout=True)
    assert classes == 120 and len(train) == 10 * 4 and len(test) == 4  # 2 of every 6 dropped
    x, y = train[0]
    assert x.shape == (3, 16, 16) and 0 <= y < 120
    with open(root / "val_data", "rb") as f:
        raw = pickle.load(f)
    first = raw["data"][0].reshape(3, 16, 16)  # the red plane, then green, then blue
    assert test.targets[0] == raw["labels"][0] - 1
    assert np.array_equal(np.asarray(test.data[0]), first.transpose(1, 2, 0))
    expected = (torch.tensor(first, dtype=torch.float32) / 255 - torch.tensor(data.IMAGENET16_MEAN).view(3, 1, 1)) \
        / torch.tensor(data.IMAGENET16_STD).view(3, 1, 1)
    assert torch.allclose(test[0][0], expected, atol=1e-5)


def test_missing_imagenet16_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetMissing) as info:
        get_datasets("imagenet16", str(tmp_path))
    message = str(info.value)
    assert "train_data_batch_1" in message and "val_data" in message and "\n" not in message
