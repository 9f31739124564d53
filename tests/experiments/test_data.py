"""Data: real MNIST from the shared originals, tfds mock data, image folders, tasks."""
import os

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfgeo.experiments import data

from tests.shared_data import CIFAR10_ARCHIVE
from tests.shared_data import MNIST as SHARED_MNIST


def test_digits_offline():
    ds = data.load_digits(seed=0, flat=False)
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert len(ds.train.y) + len(ds.test.y) == 1797
    assert 0.0 <= ds.train.x.min() and ds.train.x.max() <= 1.0
    again = data.load_digits(seed=0, flat=False)
    np.testing.assert_array_equal(ds.test.y, again.test.y)


def test_mnist_prepared_from_original_files_offline(tmp_path):
    # Must fail, not skip, in CI when the shared originals are missing.
    assert os.path.isdir(SHARED_MNIST), f"shared MNIST originals missing at {SHARED_MNIST}"
    ds = data.load_tfds("mnist", data_dir=str(tmp_path), manual_dir=SHARED_MNIST)
    assert ds.train.x.shape == (60000, 28, 28, 1) and ds.test.x.shape == (10000, 28, 28, 1)
    assert ds.num_classes == 10 and ds.train.x.dtype == np.float32
    assert ds.train.x.max() == 1.0 and ds.train.x.min() == 0.0
    # The canonical MNIST class counts (test split).
    counts = np.bincount(ds.test.y, minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_tfds_path_with_mock_data():
    with tfds.testing.mock_data(num_examples=24):
        ds = data.load_tfds("cifar100")
    assert ds.train.x.shape[1:] == (32, 32, 3) and ds.num_classes == 100
    assert len(ds.train.y) == 24 and ds.train.x.max() <= 1.0


def test_bad_names_and_manual_dir(tmp_path):
    with pytest.raises(ValueError, match="'imagenet'"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="manual_dir"):
        data.load_tfds("mnist", manual_dir=str(tmp_path / "nope"))


def test_an_unprepared_dataset_offline_fails_at_once_naming_manual_dir(tmp_path, monkeypatch):
    import socket
    import time

    def unreachable(address, timeout=None):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.delenv(data.MANUAL_DIR_ENV, raising=False)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"cannot be reached.*--manual_dir.*train-images"):
        data.load_tfds("mnist", data_dir=str(tmp_path))
    assert time.monotonic() - start < 60  # tfds's own retries take minutes
    assert not any(f.endswith(".tfrecord") for _, _, fs in os.walk(tmp_path) for f in fs)


def _write_folder(root, classes, per_class=3, size=(6, 5)):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            os.makedirs(root / split / c)
            for i in range(per_class):
                img = (rng.random((*size, 3)) * 255).astype(np.uint8)
                keras.utils.save_img(str(root / split / c / f"{i}.png"), img)


def test_image_folder(tmp_path):
    _write_folder(tmp_path, ["cat", "ant", "bee"])
    ds = data.load_image_folder(str(tmp_path))
    assert ds.num_classes == 3 and ds.input_shape == (6, 5, 3)
    assert np.bincount(ds.train.y).tolist() == [3, 3, 3]
    # Class indices follow sorted folder names: ant=0, bee=1, cat=2.
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_image_folder_with_mismatched_classes(tmp_path):
    _write_folder(tmp_path, ["a", "b"])
    os.rename(tmp_path / "test" / "b", tmp_path / "test" / "c")
    with pytest.raises(ValueError, match="same class folders"):
        data.load_image_folder(str(tmp_path))


def test_class_split_and_permuted_tasks():
    ds = data.load_digits(seed=0, flat=False)
    low, high = data.class_split_tasks(ds, [range(5), range(5, 10)], relabel=False)
    assert set(np.unique(low.train.y)) == {0, 1, 2, 3, 4}
    assert set(np.unique(high.test.y)) == {5, 6, 7, 8, 9}
    assert len(low.train.y) + len(high.train.y) == len(ds.train.y)
    (_, pair) = data.class_split_tasks(ds, [[0, 1], [8, 9]], relabel=True)[0:2]
    assert set(np.unique(pair.train.y)) == {0, 1} and pair.num_classes == 2
    tasks = data.permuted_tasks(ds, 3, seed=1)
    np.testing.assert_array_equal(tasks[0].train.x, ds.train.x)
    flat = ds.train.x.reshape(len(ds.train.y), -1)
    flat1 = tasks[1].train.x.reshape(len(ds.train.y), -1)
    assert not np.array_equal(flat, flat1)
    # Same multiset of pixels per image, and the same permutation on every image.
    np.testing.assert_array_equal(np.sort(flat, 1), np.sort(flat1, 1))
    again = data.permuted_tasks(ds, 3, seed=1)
    np.testing.assert_array_equal(again[2].test.x, tasks[2].test.x)


def test_pipeline_static_shapes():
    ds = data.load_digits(seed=0)
    pipe = data.to_dataset(ds.train, 100, shuffle=True, seed=3, drop_remainder=True)
    assert pipe.element_spec[0].shape.as_list() == [100, 64]
    first = [y.numpy().tolist() for _, y in pipe.take(1)]
    again = [y.numpy().tolist() for _, y in data.to_dataset(ds.train, 100, shuffle=True, seed=3,
                                                            drop_remainder=True).take(1)]
    assert first == again


def test_cifar10_jpeg_archive_as_image_folder():
    # JPEG re-encodings of CIFAR-10 (lossy; results on them are labelled so).
    archive = CIFAR10_ARCHIVE
    assert os.path.isfile(archive), f"shared CIFAR-10 JPEG archive missing at {archive}"
    ds = data.load("image_folder", image_folder=archive)
    assert ds.train.x.shape == (50000, 32, 32, 3) and ds.test.x.shape == (10000, 32, 32, 3)
    assert ds.num_classes == 10
    assert np.bincount(ds.test.y).tolist() == [1000] * 10
    assert np.bincount(ds.train.y).tolist() == [5000] * 10


def test_non_finite_inputs_are_refused_naming_the_split():
    ds = data.load_digits(seed=0)
    x = ds.test.x.copy()
    x[7, 3] = np.nan
    bad = ds._replace(test=data.ArraySplit(x, ds.test.y))
    with pytest.raises(ValueError, match=r"'digits': 1 test inputs contain NaN or Inf \(first at index 7\)"):
        data.check_finite(bad)


def test_corrupt_image_in_a_folder_is_named(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "ok.png")
    (tmp_path / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match="train.*unreadable image"):
        data.load_image_folder(str(tmp_path))


def test_runner_names_a_missing_dataset_folder(tmp_path):
    from tests.runner_process import run_module

    (tmp_path / "images" / "train" / "a").mkdir(parents=True)
    proc = run_module("runners.train", "--dataset=image_folder",
                      f"--image_folder={tmp_path / 'images'}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode != 0 and "FATAL --dataset=image_folder" in proc.stderr


def test_crop_flip_augmentation_is_seeded_and_shape_preserving():
    import tensorflow as tf

    x = np.random.default_rng(0).random((6, 32, 32, 3)).astype(np.float32)
    a = data.augment_crop_flip(tf.constant(x), tf.constant([1, 2])).numpy()
    b = data.augment_crop_flip(tf.constant(x), tf.constant([1, 2])).numpy()
    c = data.augment_crop_flip(tf.constant(x), tf.constant([1, 3])).numpy()
    assert a.shape == x.shape and np.array_equal(a, b) and not np.array_equal(a, c)
    # Every augmented image is a shifted (and maybe flipped) window of its zero-padded original.
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(6):
        windows = [padded[i, r:r + 32, s:s + 32] for r in range(9) for s in range(9)]
        assert any(np.array_equal(a[i], w) or np.array_equal(a[i], w[:, ::-1]) for w in windows)
    ds = data.to_dataset(data.ArraySplit(x, np.arange(6)), 3, augment="crop_flip")
    assert [xb.shape[0] for xb, _ in ds] == [3, 3]


def test_image_archives_are_decoded_once_and_cached(tmp_path):
    root = tmp_path / "imgs"
    _write_folder(root, ["a", "b"])
    import tarfile

    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="imgs")
    cache = tmp_path / "cache"
    first = data.load("image_folder", image_folder=str(archive), data_dir=str(cache))
    assert len(os.listdir(cache)) == 1
    second = data.load("image_folder", image_folder=str(archive), data_dir=str(cache))
    np.testing.assert_array_equal(first.train.x, second.train.x)
    assert second.num_classes == 2 and second.input_shape == first.input_shape
