"""Data sets, transforms and loaders: CIFAR-10/100, SVHN, ImageNet16-120, ImageNet, any ImageFolder,
digits."""
from __future__ import annotations

import copy
import importlib.util
import pickle
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

if TYPE_CHECKING:
    import torchvision.datasets as dset
    import torchvision.transforms as T

# torchvision is imported where it is used: it costs about 2 s at start-up, and the digits data
# set (the quick start and the end-to-end tests) does not need it.

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409),
              "svhn": (0.4377, 0.4438, 0.4728)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762),
             "svhn": (0.1980, 0.2010, 0.1970)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# NAS-Bench-201's normalisation of ImageNet16-120.
IMAGENET16_MEAN = tuple(x / 255 for x in (122.68, 116.66, 104.01))
IMAGENET16_STD = tuple(x / 255 for x in (63.22, 61.26, 65.09))
DATASETS = ("cifar10", "cifar100", "svhn", "imagenet16", "folder", "digits")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "imagenet16": 120, "digits": 10}
# Images in the training and test sets, and their side in pixels: what a plan (`--plan`) needs
# without reading the data. Folders (and ImageNet) are counted on disk.
SIZES = {"cifar10": (50_000, 10_000, 32), "cifar100": (50_000, 10_000, 32), "svhn": (73_257, 26_032, 32),
         "imagenet16": (151_700, 6_000, 16), "digits": (1_437, 360, 8)}
WHERE = {
    "cifar10": "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
               "extracted so that {root}/cifar-10-batches-py/ exists",
    "cifar100": "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
                "extracted so that {root}/cifar-100-python/ exists",
    "svhn": "train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ "
            "into {root}/",
    "imagenet16": "the 16x16 downsampled ImageNet pickles (Imagenet16_train.zip and Imagenet16_val.zip "
                  "from https://image-net.org/download-images: train_data_batch_1 ... train_data_batch_10 "
                  "and val_data) directly into {root}/",
}


class DatasetMissing(RuntimeError):
    """A data set is not where it should be; the message says where to put it."""


class Cutout:
    """Zero one random `length` x `length` square of a (C, H, W) image tensor (DeVries & Taylor)."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[1:]
        y, x = np.random.randint(h), np.random.randint(w)
        y0, y1 = max(y - self.length // 2, 0), min(y + self.length // 2, h)
        x0, x1 = max(x - self.length // 2, 0), min(x + self.length // 2, w)
        img = img.clone()
        img[:, y0:y1, x0:x1] = 0.0
        return img


def cifar_transforms(dataset: str, cutout: bool, cutout_length: int, flip: bool = True) -> tuple[T.Compose, T.Compose]:
    """DARTS CIFAR transforms: random crop 32 (pad 4) + flip (+ cutout) for training. SVHN is
    flipped too, as in the authors' code (`flip=False` turns flips off)."""
    import torchvision.transforms as T

    normalize = T.Normalize(CIFAR_MEAN[dataset], CIFAR_STD[dataset])
    train = [T.RandomCrop(32, padding=4)] + ([T.RandomHorizontalFlip()] if flip else [])
    train += [T.ToTensor(), normalize] + ([Cutout(cutout_length)] if cutout else [])
    return T.Compose(train), T.Compose([T.ToTensor(), normalize])


def folder_transforms(image_size: int, cutout: bool, cutout_length: int,
                      flip: bool = True) -> tuple[T.Compose, T.Compose]:
    """Transforms for an arbitrary ImageFolder: resize to a square, flip (+ cutout) for training."""
    import torchvision.transforms as T

    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    resize = T.Resize((image_size, image_size))
    train = [resize, *([T.RandomHorizontalFlip()] if flip else []), T.ToTensor(), normalize]
    train += [Cutout(cutout_length)] if cutout else []
    return T.Compose(train), T.Compose([resize, T.ToTensor(), normalize])


def imagenet_transforms(image_size: int = 224) -> tuple[T.Compose, T.Compose]:
    """DARTS/P-DARTS ImageNet transforms: RandomResizedCrop + flip + ColorJitter; resize/centre-crop."""
    import torchvision.transforms as T

    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = T.Compose([
        T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
        T.ToTensor(), normalize,
    ])
    test = T.Compose([T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size),
                      T.ToTensor(), normalize])
    return train, test


def imagenet16_transforms(cutout: bool, cutout_length: int, flip: bool = True) -> tuple[T.Compose, T.Compose]:
    """NAS-Bench-201's ImageNet16-120 transforms: flip + random crop 16 (pad 2) (+ cutout) for
    training."""
    import torchvision.transforms as T

    normalize = T.Normalize(IMAGENET16_MEAN, IMAGENET16_STD)
    train = [*([T.RandomHorizontalFlip()] if flip else []), T.RandomCrop(16, padding=2), T.ToTensor(), normalize]
    train += [Cutout(cutout_length)] if cutout else []
    return T.Compose(train), T.Compose([T.ToTensor(), normalize])


class ImageNet16(Dataset):
    """ImageNet16-120, as NAS-Bench-201 uses it: the downsampled ImageNet 16x16 pickles
    (Chrabaszcz et al., 2017), restricted to the images of the first `num_classes` (120) classes.

    Each file is a pickled dict with `data` (N, 768) uint8 (the red plane, then green, then blue)
    and `labels` (1-based); the training set is `train_data_batch_1..10`, the test set `val_data`.
    """

    def __init__(self, root: str, train: bool, transform=None, num_classes: int = 120):
        names = [f"train_data_batch_{i}" for i in range(1, 11)] if train else ["val_data"]
        missing = [n for n in names if not (Path(root) / n).is_file()]
        if missing:
            where = WHERE["imagenet16"].format(root=root)
            raise DatasetMissing(f"imagenet16: no '{Path(root) / missing[0]}'; put {where}, "
                                 "or point --data at the folder that holds them")
        images, labels = [], []
        for name in names:
            try:
                with open(Path(root) / name, "rb") as f:
                    entry = pickle.load(f, encoding="latin1")
                data, target = np.asarray(entry["data"], dtype=np.uint8), np.asarray(entry["labels"])
            except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
                raise DatasetMissing(f"imagenet16: cannot read '{Path(root) / name}' "
                                     f"({type(e).__name__}: {e})") from None
            keep = (target >= 1) & (target <= num_classes)
            images.append(data[keep].reshape(-1, 3, 16, 16).transpose(0, 2, 3, 1))  # (n, 16, 16, 3)
            labels.append(target[keep] - 1)
        self.data, self.targets = np.concatenate(images), np.concatenate(labels).tolist()
        self.transform = transform
        self.classes = [str(i) for i in range(num_classes)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image

        image = Image.fromarray(self.data[i])
        return (self.transform(image) if self.transform else image), self.targets[i]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) with values 0..16, labels): the digits file scikit-learn ships, read
    the way `sklearn.datasets.load_digits` reads it, without importing scikit-learn (2-3 s)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise DatasetMissing("--dataset digits reads the data scikit-learn ships: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # another layout: let scikit-learn find it
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        return bunch.images, bunch.target
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


class Digits(Dataset):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), as 3x8x8 tensors.

    A fixed 80/20 split: `train=True` gives 1,437 images, `train=False` the other 360.
    """

    def __init__(self, train: bool):
        images, targets = load_digits()
        order = np.random.RandomState(0).permutation(len(targets))
        cut = int(0.8 * len(order))
        keep = order[:cut] if train else order[cut:]
        images = torch.tensor(images[keep], dtype=torch.float32, device="cpu") / 16.0  # (N, 8, 8) in [0, 1]
        self.images = ((images - 0.5) / 0.5).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        self.targets = torch.tensor(targets[keep], dtype=torch.long, device="cpu")
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], int(self.targets[i])


def _torchvision_dataset(name: str, root: str, train: bool, transform):
    """CIFAR-10/100 or SVHN from `root`, downloaded when missing; one clear error when offline."""
    import torchvision.datasets as dset

    if name == "svhn":
        make = lambda download: dset.SVHN(root, split="train" if train else "test",
                                          transform=transform, download=download)
    else:
        cls = dset.CIFAR10 if name == "cifar10" else dset.CIFAR100
        make = lambda download: cls(root, train=train, transform=transform, download=download)
    try:
        return make(False)
    except RuntimeError:
        pass
    try:
        return make(True)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        where = WHERE[name].format(root=root)
        raise DatasetMissing(
            f"{name} not found in '{root}' and the download failed ({type(e).__name__}); "
            f"put {where}, or point --data at the folder that holds it"
        ) from None


def _image_folder(root: str, split: str, transform) -> dset.ImageFolder:
    """An ImageFolder at `root/split`, or a one-line error saying what layout is expected."""
    import torchvision.datasets as dset

    path = Path(root) / split
    if not path.is_dir():
        raise DatasetMissing(
            f"no folder '{path}': --data must hold train/ and val/ with one sub-folder per class"
        )
    try:
        return dset.ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:
        raise DatasetMissing(f"cannot read images under '{path}': {e}") from None


RESIZED = ("folder", "imagenet")  # the data sets whose images --image_size resizes


def transforms(name: str, *, cutout: bool = False, cutout_length: int = 16,
               image_size: int = 32, flip: bool = True) -> tuple[T.Compose | None, T.Compose | None]:
    """(training, evaluation) transforms of a data set name (digits are tensors already: None);
    `flip=False`: no random horizontal flips in training (ImageNet keeps its own recipe)."""
    if name == "digits":
        return None, None
    if name == "folder":
        return folder_transforms(image_size, cutout, cutout_length, flip)
    if name == "imagenet":
        return imagenet_transforms(image_size)
    if name == "imagenet16":
        return imagenet16_transforms(cutout, cutout_length, flip)
    return cifar_transforms(name, cutout, cutout_length, flip)


def get_datasets(name: str, root: str, *, cutout: bool = False, cutout_length: int = 16,
                 image_size: int = 32, test: bool = True, flip: bool = True) -> tuple[Dataset, Dataset | None, int]:
    """Return (train set, test set, number of classes) of a data set name in DATASETS.

    `test=False` never opens the test split (model selection): the test set is then None.
    """
    train_tf, test_tf = transforms(name, cutout=cutout, cutout_length=cutout_length, image_size=image_size,
                                   flip=flip)
    if name == "digits":
        return Digits(train=True), Digits(train=False) if test else None, NUM_CLASSES[name]
    if name in ("folder", "imagenet"):
        train = _image_folder(root, "train", train_tf)
        return train, _image_folder(root, "val", test_tf) if test else None, len(train.classes)
    if name == "imagenet16":
        train = ImageNet16(root, True, train_tf)
        return train, ImageNet16(root, False, test_tf) if test else None, NUM_CLASSES[name]
    train = _torchvision_dataset(name, root, True, train_tf)
    return train, _torchvision_dataset(name, root, False, test_tf) if test else None, NUM_CLASSES[name]


def sample_order(dataset: Dataset) -> list[int]:
    """The order in which splits and `--subset` take a training set's images: the stored order
    for CIFAR/SVHN/digits (the DARTS split: first part and the rest), and a fixed permutation
    for image folders, which list their files class by class (the first half would otherwise be
    the first half of the classes)."""
    if hasattr(dataset, "samples"):  # torchvision ImageFolder
        return np.random.RandomState(0).permutation(len(dataset)).tolist()
    return list(range(len(dataset)))


def split_indices(order: int | list[int], portion: float) -> tuple[list[int], list[int]]:
    """The DARTS search split of `order` (a list of indices, or n for 0..n-1): the first
    `portion` of it and the rest."""
    order = list(range(order)) if isinstance(order, int) else list(order)
    cut = int(np.floor(portion * len(order)))
    return order[:cut], order[cut:]


def holdout_split(train_set: Dataset, portion: float, eval_transform=None) -> tuple[Dataset, Dataset | None]:
    """Hold out `portion` of the training set for validation (the last part of `sample_order`),
    seen with the evaluation transform; `portion` 0 gives (train_set, None)."""
    if portion <= 0:
        return train_set, None
    train_idx, valid_idx = split_indices(sample_order(train_set), 1.0 - portion)
    return Subset(train_set, train_idx), Subset(with_transform(train_set, eval_transform), valid_idx)


def with_transform(dataset: Dataset, transform) -> Dataset:
    """A view of `dataset` (the same images, not copied) that applies `transform` instead."""
    view = copy.copy(dataset)
    if hasattr(view, "transform"):
        view.transform = transform
    return view


class ShardSampler(Sampler):
    """In order, without shuffling or padding: this process's every `world_size`-th index, so an
    evaluation split over processes sees each image exactly once."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(dataset: Dataset, batch_size: int, *, indices: list[int] | None = None,
                shuffle: bool = False, workers: int = 0, seed: int = 0, drop_last: bool = False,
                pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader over `dataset` (or its `indices`) for process `rank` of `world_size`.

    Shuffled loaders use a DistributedSampler (also for one process): the order of a pass is a
    function of `seed` and the pass number given to `loader.sampler.set_epoch`, which is what
    makes resuming exact, and resuming with another number of processes possible. Unshuffled
    loaders give each process a disjoint share of the images, each image once.
    """
    if indices is not None:
        dataset = Subset(dataset, indices)
    if shuffle:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    generator = torch.Generator().manual_seed(seed + rank)  # seeds the worker processes
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      generator=generator, drop_last=drop_last, pin_memory=pin_memory,
                      persistent_workers=workers > 0)
