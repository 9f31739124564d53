"""Datasets: loaders to in-memory arrays, task constructions, and `tf.data` pipelines.

* `digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 images,
  10 classes), needing no download: the offline default of every runner.
* `mnist`, `cifar10`, `cifar100`: through tensorflow-datasets. With
  `manual_dir` (or the environment variable TFGEO_MANUAL_DIR) tfds prepares
  the dataset from a folder holding the original distribution files, with
  no network (`tfds.download.DownloadConfig(manual_dir=...)`).
* Image folders (`train/<class>/*`, `test/<class>/*`) through
  `keras.utils.image_dataset_from_directory`.

Images are scaled to [0, 1] float32 with a channel axis ([N, H, W, C]);
models flatten as they need. The splits fit in memory on these machines
(CIFAR-10 train is 600 MB as float32), which keeps task constructions
(class splits, pixel permutations) exact and simple.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from . import errors


class ArraySplit(NamedTuple):
    x: np.ndarray  # [N, ...] float32 inputs
    y: np.ndarray  # [N] int32 labels


class ArrayDataset(NamedTuple):
    train: ArraySplit
    test: ArraySplit
    input_shape: tuple
    num_classes: int
    name: str


def load_digits(test_fraction: float = 0.25, seed: int = 0, flat: bool = True) -> ArrayDataset:
    """scikit-learn digits, scaled to [0, 1], split into train/test with a seeded shuffle.

    Returns inputs of shape [N, 64] (flat) or [N, 8, 8, 1].
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    from sklearn import datasets as sk_datasets  # local: only this loader needs sklearn

    bunch = sk_datasets.load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    x = x.reshape(len(y), 64) if flat else x[..., None]
    n_test = int(round(test_fraction * len(y)))
    return ArrayDataset(
        train=ArraySplit(x[n_test:], y[n_test:]),
        test=ArraySplit(x[:n_test], y[:n_test]),
        input_shape=tuple(x.shape[1:]),
        num_classes=10,
        name="digits",
    )


TFDS_NAMES = ("mnist", "cifar10", "cifar100")
NAMES = ("digits",) + TFDS_NAMES + ("image_folder",)
MANUAL_DIR_ENV = "TFGEO_MANUAL_DIR"
DATA_DIR_ENV = "TFGEO_DATA_DIR"


def load_tfds(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> ArrayDataset:
    """Loads a tfds image-classification dataset ('mnist', 'cifar10', 'cifar100').

    Args:
      data_dir: tfds cache folder (default $TFGEO_DATA_DIR or tfds's default).
      manual_dir: folder with the original distribution files (default
        $TFGEO_MANUAL_DIR); when given, preparation needs no network.
    """
    if name not in TFDS_NAMES:
        raise ValueError(f"Unknown tfds dataset {name!r}; expected one of {TFDS_NAMES}.")
    import tensorflow_datasets as tfds  # local: heavy import, only this loader needs it

    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    manual_dir = manual_dir or os.environ.get(MANUAL_DIR_ENV) or None
    if manual_dir is not None and not os.path.isdir(manual_dir):
        raise ValueError(f"manual_dir {manual_dir!r} is not a directory.")
    builder = tfds.builder(name, data_dir=data_dir)
    if manual_dir is not None and not builder.is_prepared():
        check_manual_dir(builder, manual_dir)
    elif not builder.is_prepared() and _downloads(builder):
        check_reachable(builder)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    splits = {}
    for split in ("train", "test"):
        # Batched iteration, not batch_size=-1: the latter aborts under
        # tfds.testing.mock_data (seen with tfds 4.9).
        batches = builder.as_dataset(split=split, as_supervised=True).batch(8192)
        images, labels = zip(*tfds.as_numpy(batches))
        splits[split] = ArraySplit((np.concatenate(images) / 255.0).astype(np.float32),
                                   np.concatenate(labels).astype(np.int32))
    return ArrayDataset(
        train=splits["train"], test=splits["test"],
        input_shape=tuple(splits["train"].x.shape[1:]),
        num_classes=builder.info.features["label"].num_classes, name=name,
    )


def _downloads(builder) -> bool:
    # tfds.testing.mock_data replaces download_and_prepare (nothing is fetched).
    return type(builder).download_and_prepare.__module__.startswith("tensorflow_datasets.core")


def check_reachable(builder, timeout: float = 5.0) -> None:
    """Raises ValueError at once when a dataset must be downloaded and its
    servers cannot be reached, instead of tfds's minutes of retries, naming
    the offline route (`--manual_dir` / $TFGEO_MANUAL_DIR) and its files."""
    import socket
    from urllib.parse import urlparse

    urls = sorted((getattr(builder, "url_infos", None) or {}).keys())
    for host in sorted({urlparse(u).hostname for u in urls if urlparse(u).hostname}):
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
        except OSError:
            names = ", ".join(u.rsplit("/", 1)[-1] for u in urls)
            raise ValueError(
                f"{builder.name} is not prepared in {builder.data_dir} and {host} cannot be "
                f"reached to download it: give --manual_dir (or ${MANUAL_DIR_ENV}) a folder "
                f"holding the original files ({names}).") from None


def fingerprint(path: str) -> str:
    """sha256 (hex) of a file's bytes, or of a folder's files: each relative
    name and its bytes, in sorted order."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        files = sorted(os.path.relpath(os.path.join(root, name), path)
                       for root, _, names in os.walk(path) for name in names)
    else:
        files = [None]
    for rel in files:
        if rel is not None:
            digest.update(rel.encode() + b"\0")
        with open(path if rel is None else os.path.join(path, rel), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_manual_dir(builder, manual_dir: str) -> None:
    """Raises ValueError naming the first file tfds needs that `manual_dir`
    lacks or holds with other contents (size or sha256), instead of letting
    tfds fall back to a download that cannot succeed offline."""
    infos = getattr(builder, "url_infos", None) or {}
    for url, info in sorted(infos.items()):
        filename = getattr(info, "filename", None) or url.rsplit("/", 1)[-1]
        path = os.path.join(manual_dir, filename)
        if not os.path.isfile(path):
            raise ValueError(f"manual_dir {manual_dir!r} lacks {filename} (the original file "
                             f"from {url}).")
        size = getattr(info, "size", None)
        if size is not None and os.path.getsize(path) != int(size):
            raise ValueError(f"manual_dir {manual_dir!r}: {filename} has "
                             f"{os.path.getsize(path)} bytes, the original {int(size)}.")
        checksum = getattr(info, "checksum", None)
        if checksum:
            if fingerprint(path) != checksum:
                raise ValueError(f"manual_dir {manual_dir!r}: {filename} is not the original "
                                 "file (sha256 differs).")


def extract_archive(archive: str, destination: str) -> str:
    """Extracts a .tar.gz (e.g. the CIFAR-10 JPEG folders) and returns `destination`."""
    if not os.path.isfile(archive):
        raise ValueError(f"archive {archive!r} does not exist.")
    os.makedirs(destination, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
    return destination


def _find_split_root(root):
    # Archives often wrap train/ and test/ in one top-level folder.
    if os.path.isdir(os.path.join(root, "train")):
        return root
    subdirs = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
    if len(subdirs) == 1 and os.path.isdir(os.path.join(root, subdirs[0], "train")):
        return os.path.join(root, subdirs[0])
    raise ValueError(f"{root!r} has no train/ folder (expected train/<class>/*, test/<class>/*).")


def load_image_folder(root: str, image_size: Sequence[int] | None = None,
                      color_mode: str = "rgb") -> ArrayDataset:
    """Loads `root/train/<class>/*` and `root/test/<class>/*` images into arrays.

    Class indices follow the sorted class-folder names of train/; test/ must
    have the same classes. `image_size` defaults to the first image's size.
    """
    import keras

    root = _find_split_root(root)
    classes = sorted(d for d in os.listdir(os.path.join(root, "train"))
                     if os.path.isdir(os.path.join(root, "train", d)))
    if len(classes) < 2:
        raise ValueError(f"{root}/train has {len(classes)} class folders; need at least 2.")
    test_classes = sorted(os.listdir(os.path.join(root, "test"))) if os.path.isdir(
        os.path.join(root, "test")) else None
    if test_classes != classes:
        raise ValueError(f"{root}/test must have the same class folders as train/: {classes}.")
    if image_size is None:
        first_dir = os.path.join(root, "train", classes[0])
        first = sorted(os.listdir(first_dir))[0]
        image = keras.utils.load_img(os.path.join(first_dir, first))
        image_size = (image.height, image.width)
    splits = {}
    for split in ("train", "test"):
        ds = keras.utils.image_dataset_from_directory(
            os.path.join(root, split), labels="inferred", label_mode="int", class_names=classes,
            color_mode=color_mode, image_size=tuple(image_size), shuffle=False, batch_size=1024,
            verbose=False,
        )
        try:
            xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
        except tf.errors.OpError as e:  # e.g. a truncated or non-image file
            raise ValueError(f"image folder {os.path.join(root, split)!r} has an unreadable "
                             f"image: {e.message.splitlines()[0]}") from None
        splits[split] = ArraySplit((np.concatenate(xs) / 255.0).astype(np.float32),
                                   np.concatenate(ys).astype(np.int32))
    return ArrayDataset(splits["train"], splits["test"], tuple(splits["train"].x.shape[1:]),
                        len(classes), os.path.basename(os.path.normpath(root)))


def check_finite(ds: ArrayDataset) -> ArrayDataset:
    """Raises ValueError naming the dataset, split and first bad example if
    any input is NaN or infinite (a NaN input would make every step fail)."""
    for split_name, split in (("train", ds.train), ("test", ds.test)):
        bad = ~np.isfinite(split.x.reshape(len(split.x), -1)).all(axis=1)
        if bad.any():
            raise ValueError(f"dataset {ds.name!r}: {int(bad.sum())} {split_name} inputs contain "
                             f"NaN or Inf (first at index {int(np.argmax(bad))}).")
    return ds


def load(name: str, seed: int = 0, data_dir=None, manual_dir=None, image_folder=None) -> ArrayDataset:
    """One entry point for runners: 'digits', 'mnist', 'cifar10', 'cifar100', 'image_folder'.
    Inputs are checked to be finite (`check_finite`)."""
    return check_finite(_load(name, seed, data_dir, manual_dir, image_folder))


def _load(name, seed, data_dir, manual_dir, image_folder):
    if name == "digits":
        return load_digits(seed=seed, flat=False)
    if name in TFDS_NAMES:
        return load_tfds(name, data_dir=data_dir, manual_dir=manual_dir)
    if name == "image_folder":
        if not image_folder:
            raise ValueError("dataset 'image_folder' needs image_folder (a folder or .tar.gz).")
        if os.path.isfile(image_folder) and image_folder.endswith((".tar.gz", ".tgz")):
            return _cached(image_folder, data_dir, _load_archive)
        return load_image_folder(image_folder)
    raise ValueError(f"Unknown dataset {name!r}; expected one of {NAMES}.")


def _load_archive(archive):
    import tempfile

    # The arrays end up in memory, so the extracted copy is removed after loading.
    with tempfile.TemporaryDirectory(prefix="tfgeo-images-") as tmp:
        ds = load_image_folder(extract_archive(archive, tmp))
    return ds._replace(name=_archive_name(archive))


def _archive_name(archive: str) -> str:
    """'cifar10_jpg' for '.../cifar10_jpg.tar.gz'."""
    return os.path.basename(archive).split(".")[0]


def _cached(archive: str, data_dir, load_fn) -> ArrayDataset:
    """`load_fn(archive)`, decoded once and kept as arrays in
    `<data_dir or $TFGEO_DATA_DIR or ~/.cache/tfgeo>/<name>-<size>-<mtime>.npz`
    (decoding 60,000 JPEGs takes a minute; loading the arrays, a second)."""
    folder = data_dir or os.environ.get(DATA_DIR_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "tfgeo")
    stat = os.stat(archive)
    key = hashlib.sha256(f"{os.path.abspath(archive)}|{stat.st_size}|{stat.st_mtime_ns}"
                         .encode()).hexdigest()[:16]
    path = os.path.join(folder, f"{os.path.basename(archive).split('.')[0]}-{key}.npz")
    if os.path.exists(path):
        try:
            with np.load(path) as npz:
                return ArrayDataset(ArraySplit(npz["train_x"], npz["train_y"]),
                                    ArraySplit(npz["test_x"], npz["test_y"]),
                                    tuple(npz["train_x"].shape[1:]), int(npz["num_classes"]),
                                    _archive_name(archive))
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt
            pass
    ds = load_fn(archive)
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, train_x=ds.train.x, train_y=ds.train.y, test_x=ds.test.x,
                 test_y=ds.test.y, num_classes=ds.num_classes, name=ds.name)
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs the decoding next time
        pass
    return ds


def class_split_tasks(ds: ArrayDataset, groups: Sequence[Sequence[int]],
                      relabel: bool = False) -> list[ArrayDataset]:
    """One task per group of classes, e.g. split-MNIST [[0..4], [5..9]].

    With relabel=True labels become 0..len(group)-1 within each task (a
    task-incremental head); otherwise the original labels are kept.
    """
    tasks = []
    for i, group in enumerate(groups):
        group = [int(c) for c in group]
        if not group or any(not 0 <= c < ds.num_classes for c in group):
            raise ValueError(f"group {group} must be non-empty classes in [0, {ds.num_classes}).")
        lookup = np.full(ds.num_classes, -1, np.int32)
        lookup[group] = np.arange(len(group)) if relabel else group
        parts = []
        for split in (ds.train, ds.test):
            keep = np.isin(split.y, group)
            parts.append(ArraySplit(split.x[keep], lookup[split.y[keep]]))
        tasks.append(ArrayDataset(parts[0], parts[1], ds.input_shape,
                                  len(group) if relabel else ds.num_classes, f"{ds.name}-task{i}"))
    return tasks


def permuted_tasks(ds: ArrayDataset, num_tasks: int, seed: int = 0,
                   keep_first: bool = True) -> list[ArrayDataset]:
    """Permuted tasks: one fixed pixel permutation per task (seeded).

    The first task is the original data when keep_first is True.
    """
    if num_tasks <= 0:
        raise ValueError(f"num_tasks must be > 0, got {num_tasks}.")
    rng = np.random.default_rng(seed)
    size = int(np.prod(ds.input_shape))
    tasks = []
    for i in range(num_tasks):
        perm = np.arange(size) if (i == 0 and keep_first) else rng.permutation(size)
        parts = [ArraySplit(s.x.reshape(len(s.y), size)[:, perm].reshape(s.x.shape), s.y)
                 for s in (ds.train, ds.test)]
        tasks.append(ArrayDataset(parts[0], parts[1], ds.input_shape, ds.num_classes,
                                  f"{ds.name}-perm{i}"))
    return tasks


def validation_split(split: ArraySplit, fraction: float, seed: int = 0) -> tuple[ArraySplit, ArraySplit]:
    """(train, validation) from a training split, seeded, for honest tuning."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    order = np.random.default_rng(seed).permutation(len(split.y))
    n_val = int(round(fraction * len(split.y)))
    val, train = order[:n_val], order[n_val:]
    return ArraySplit(split.x[train], split.y[train]), ArraySplit(split.x[val], split.y[val])


AUGMENTATIONS = ("none", "crop_flip")


def augment_crop_flip(x: tf.Tensor, seed) -> tf.Tensor:
    """The standard CIFAR augmentation: pad 4 pixels (zeros), crop back at a random
    offset, flip left-right with probability 1/2. x: [N, H, W, C]; seed: [2] ints."""
    n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    padded = tf.pad(x, [[0, 0], [4, 4], [4, 4], [0, 0]])
    offsets = tf.random.stateless_uniform([n, 2], seed, 0, 9, dtype=tf.int32)
    flips = tf.random.stateless_uniform([n], seed + [0, 1]) < 0.5

    def one(args):
        image, offset, flip = args
        crop = tf.slice(image, [offset[0], offset[1], 0], [h, w, -1])
        return tf.where(flip, tf.image.flip_left_right(crop), crop)

    return tf.map_fn(one, (padded, offsets, flips), fn_output_signature=x.dtype)


def to_dataset(
    split: ArraySplit,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    repeat: bool = False,
    augment: str = "none",
) -> tf.data.Dataset:
    """(x, y) batches from arrays; seeded shuffle, optional static batch shape, and
    optional augmentation (`AUGMENTATIONS`; seeded per batch)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}.")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}.")
    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if shuffle:
        ds = ds.shuffle(len(split.y), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment == "crop_flip":
        ds = ds.enumerate().map(
            lambda k, xy: (augment_crop_flip(xy[0], tf.stack([tf.cast(seed, tf.int32),
                                                               tf.cast(k, tf.int32)])), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_splits(data_config, seed: int = 0):
    """(dataset, train, validation) for a `config.DataConfig`: validation is a
    held-out part of the training split (None for fraction 0), and train is
    optionally a seeded subset of the rest. The test split stays in `dataset`."""
    ds = load(data_config.dataset, seed=seed, data_dir=data_config.data_dir,
              manual_dir=data_config.manual_dir, image_folder=data_config.image_folder)
    train, validation = ds.train, None
    if data_config.validation_fraction > 0:
        train, validation = validation_split(ds.train, data_config.validation_fraction, seed)
    if 0 < data_config.train_examples < len(train.y):
        keep = np.sort(np.random.default_rng(seed).permutation(len(train.y))[
            :data_config.train_examples])
        train = ArraySplit(train.x[keep], train.y[keep])
    return ds, train, validation


def load_run_splits(data_config, seed: int = 0):
    """`load_splits`, with any failure to load reported as an input error naming --dataset."""
    try:
        return load_splits(data_config, seed)
    except (ValueError, OSError) as e:
        raise errors.InputError(f"--dataset={data_config.dataset}: {e}") from None
