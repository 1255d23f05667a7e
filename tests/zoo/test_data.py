import os
import shutil

import numpy as np
import keras
import pytest

from zoo.data import load_data
from zoo.datasets import load_digits
from zoo.spec import SpecError, load_spec
from zoo.train import RunError, train, validate
from tests.zoo.conftest import stop_after_one_epoch, write_spec


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """120 digits written as PNG files: a class-per-folder tree, a Caffe
    listing and a CSV over the same files."""
    root = tmp_path_factory.mktemp("images")
    (x, y), _ = load_digits(validation_split=0.0, seed=0)
    x, y = x[:120], y[:120]
    lines, rows = [], ["path,label"]
    for i, (image, label) in enumerate(zip(x, y)):
        relative = f"digit_{label}/{i}.png"
        (root / f"digit_{label}").mkdir(exist_ok=True)
        keras.utils.save_img(root / relative, np.round(image * 255), scale=False)
        lines.append(f"{relative} {label}")
        rows.append(f"{relative},digit_{label}")
    (root / "train.txt").write_text("\n".join(lines[:100]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[100:]) + "\n")
    (root / "all.csv").write_text("\n".join(rows) + "\n")
    return root, x, y


def data_spec(data, backbone=None):
    return load_spec({"backbone": backbone or {"name": "small_cnn"}, "head": {"classes": 10},
                      "solver": {"base_lr": 0.01, "epochs": 1}, "data": data}).data


def first_batch(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def epoch_batches(data, batch_size, epoch):
    """The training batches of one epoch, as numpy arrays."""
    steps = data.steps(batch_size)
    return [(x.numpy(), y.numpy()) for x, y in data.train(batch_size, epoch, 1).take(steps)]


def test_listing_with_separate_validation_keeps_caffe_integer_labels(image_files):
    root, x, y = image_files
    data = data_spec({"listing": str(root / "train.txt"), "validation": {"listing": str(root / "val.txt")},
                      "image_size": [8, 8], "channels": 1, "shuffle": False})
    loaded = load_data(data, seed=0, channels=1)
    images, labels = first_batch(loaded.train(100, 0, 1))
    assert images.shape == (100, 8, 8, 1)
    np.testing.assert_array_equal(labels, y[:100])
    np.testing.assert_allclose(images, x[:100], atol=1 / 255)
    val_images, val_labels = first_batch(loaded.validation(100))
    np.testing.assert_array_equal(val_labels, y[100:])


def test_folder_and_csv_number_class_names_in_sorted_order(image_files):
    root, x, y = image_files
    for source in ({"folder": str(root)}, {"csv": str(root / "all.csv")}):
        data = data_spec({**source, "image_size": [8, 8], "channels": 1, "validation_split": 0.25})
        loaded = load_data(data, seed=0, channels=1)
        assert loaded.class_names == [f"digit_{d}" for d in range(10)]
        images, labels = first_batch(loaded.train(200, 0, 1))
        val_images, _ = first_batch(loaded.validation(200))
        assert len(images) == 90 and len(val_images) == 30
        # Every image still carries its own label.
        by_image = {np.round(img * 16).astype(int).tobytes(): label for img, label in zip(x, y)}
        assert [by_image[np.round(img * 16).astype(int).tobytes()] for img in images] == labels.tolist()


def test_every_epoch_has_its_own_order_keyed_on_the_seed_and_the_epoch():
    data = data_spec({"builtin": "digits", "augment": {"flip": "horizontal", "random_crop": [6, 6]}})
    first = load_data(data, seed=3, channels=1)
    epoch_0, epoch_1 = epoch_batches(first, 50, 0), epoch_batches(first, 50, 1)
    assert not np.array_equal(epoch_0[0][1], epoch_1[0][1])  # reshuffled
    # The same seed and epoch give the same batches, augmentation included,
    # whether the pipeline starts at that epoch or runs into it.
    again = load_data(data, seed=3, channels=1)
    two_epochs = [(x.numpy(), y.numpy()) for x, y in again.train(50, 0, 2)]
    for (x, y), (x2, y2) in zip(epoch_0 + epoch_1, two_epochs):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    for (x, y), (x2, y2) in zip(epoch_1, epoch_batches(again, 50, 1)):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(epoch_batches(load_data(data, seed=4, channels=1), 50, 0)[0][1], epoch_0[0][1])
    # Each epoch holds every training image once: its labels are a permutation.
    labels = np.concatenate([y for _, y in epoch_0])
    assert len(labels) == first.train_size and sorted(labels) == sorted(np.concatenate([y for _, y in epoch_1]))


def test_resize_channels_crop_flip_and_backbone_normalization():
    data = data_spec({"builtin": "digits", "image_size": [40, 40], "channels": 3,
                      "augment": {"random_crop": [32, 32], "flip": "horizontal"},
                      "normalization": "backbone"}, backbone={"name": "mobilenet_v2"})
    loaded = load_data(data, seed=0, channels=3, preprocess=keras.applications.mobilenet_v2.preprocess_input)
    images, _ = first_batch(loaded.train(16, 0, 1))
    assert images.shape == (16, 32, 32, 3)
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.min() < -0.9  # MobileNetV2: [-1, 1]
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray repeated over RGB
    val_images, _ = first_batch(loaded.validation(16))
    assert val_images.shape == (16, 32, 32, 3)
    assert loaded.image_shape == (32, 32, 3)


def test_data_errors_are_spec_errors(tmp_path):
    spec = {"backbone": {"model": "m.keras", "cut_at": "x"}, "head": {"classes": 10},
            "solver": {"base_lr": 0.01, "epochs": 1},
            "data": {"folder": "nowhere", "builtin": "digits", "normalization": "backbone"}}
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, spec))
    messages = dict(caught.value.errors)
    assert "give exactly one source" in messages["$.data"]
    assert messages["$.data.folder"] == "no such folder: nowhere"
    assert "needs a backbone that knows its input preprocessing" in messages["$.data.normalization"]


def test_image_shape_mismatch_is_a_spec_error_before_training(tmp_path):
    spec = {"backbone": {"name": "small_cnn", "input_shape": [16, 16, 1]}, "head": {"classes": 10},
            "solver": {"base_lr": 0.01, "epochs": 1}, "data": {"builtin": "digits", "image_size": [8, 8]}}
    with pytest.raises(SpecError, match=r"images are \(8, 8, 1\) but the model takes \(16, 16, 1\)"):
        train(write_spec(tmp_path, spec), run_dir=tmp_path / "run", verbose=0)
    # Without image_size, the images take the backbone's size.
    del spec["data"]["image_size"]
    assert validate(spec).data.image_shape == (16, 16, 1)


def test_training_from_an_image_folder(image_files, tmp_path):
    root, _, _ = image_files
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10},
            "solver": {"base_lr": 0.05, "epochs": 2, "batch_size": 16},
            "data": {"folder": str(root), "image_size": [8, 8], "channels": 1,
                     "augment": {"flip": "horizontal"}}}
    result = train(write_spec(tmp_path, spec), run_dir=tmp_path / "run", verbose=0)
    assert len(result.history) == 2 and np.isfinite(result.history["loss"]).all()


def test_channels_default_to_the_models_input_channels(image_files):
    root, _, _ = image_files
    digits = data_spec({"builtin": "digits"})
    assert digits.channels is None
    assert load_data(digits, seed=0, channels=1).image_shape == (8, 8, 1)
    assert load_data(digits, seed=0, channels=3).image_shape == (8, 8, 3)
    files = data_spec({"folder": str(root), "image_size": [8, 8]})
    assert load_data(files, seed=0, channels=1).image_shape == (8, 8, 1)
    assert load_data(data_spec({"folder": str(root), "image_size": [8, 8], "channels": 3}),
                     seed=0, channels=1).image_shape == (8, 8, 3)  # the spec's own setting wins


def test_a_three_channel_backbone_gets_the_digits_in_rgb_without_being_told(tmp_path):
    spec = {"backbone": {"name": "small_cnn", "input_shape": [8, 8, 3]}, "head": {"classes": 10},
            "solver": {"base_lr": 0.05, "epochs": 1, "batch_size": 128}, "data": {"builtin": "digits"}}
    result = train(spec, run_dir=tmp_path / "run", verbose=0)
    assert result.model.input_shape == (None, 8, 8, 3) and np.isfinite(result.history["loss"]).all()


# --- data.cache -----------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    """36 small RGB images in 3 class folders: JPEG files of 14x12, which
    the pipeline resizes to 10x10, and PNG files already of 10x10."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(36):
        folder = root / f"class_{i % 3}"
        folder.mkdir(exist_ok=True)
        if i % 2:
            keras.utils.save_img(folder / f"{i}.jpg", rng.integers(0, 256, (14, 12, 3)), scale=False)
        else:
            keras.utils.save_img(folder / f"{i}.png", rng.integers(0, 256, (10, 10, 3)), scale=False)
    return root


def photo_data(root, cache, cache_dir=None, seed=5):
    data = data_spec({"folder": str(root), "image_size": [10, 10], "channels": 3, "validation_split": 0.25,
                      "augment": {"random_crop": [8, 8], "flip": "horizontal_and_vertical"}, "cache": cache})
    return load_data(data, seed=seed, channels=3, cache_dir=cache_dir)


def all_batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for (x, y), (x2, y2) in zip(got, expected):
        assert x.dtype == x2.dtype == np.float32
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize("cache", ["memory", "file"])
def test_cached_batches_are_the_uncached_ones_bit_for_bit(photo_files, tmp_path, cache):
    uncached = photo_data(photo_files, False)
    expected_train, expected_validation = all_batches(uncached.train(5, 0, 2)), all_batches(uncached.validation(5))
    cached = photo_data(photo_files, cache, tmp_path / "cache")
    # Two epochs of random crops and flips, and the validation's central crops.
    assert_same_batches(all_batches(cached.train(5, 0, 2)), expected_train)
    assert_same_batches(all_batches(cached.validation(5)), expected_validation)
    # A run resumed at epoch 1 gets epoch 1's batches.
    resumed = photo_data(photo_files, cache, tmp_path / "cache")
    assert_same_batches(all_batches(resumed.train(5, 1, 1)), expected_train[uncached.steps(5):])
    assert expected_train[0][0].shape == (5, 8, 8, 3)


def test_the_file_cache_is_written_once_reused_and_renewed_for_a_changed_image(photo_files, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(photo_files, root)
    folder = tmp_path / "cache"
    data = photo_data(root, "file", folder)
    assert data.image_shape == (8, 8, 3) and not folder.exists()  # nothing decoded before batches are asked for
    first = all_batches(data.train(5, 0, 1))
    all_batches(data.validation(5))
    written = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    assert sorted(name.split("-")[0] for name in written) == ["training", "validation"]
    cached = np.load(folder / next(name for name in written if name.startswith("training")))
    assert cached.dtype == np.uint8 and cached.shape == (data.train_size, 10, 10, 3)

    again = photo_data(root, "file", folder)
    assert_same_batches(all_batches(again.train(5, 0, 1)), first)
    all_batches(again.validation(5))
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == written  # read, not written

    # A changed image (a new size and modification time) gets its split a new file.
    changed = sorted(root.rglob("*.jpg"))[0]
    keras.utils.save_img(changed, np.zeros((16, 16, 3)), scale=False)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    renewed = photo_data(root, "file", folder)
    renewed_batches = all_batches(renewed.train(5, 0, 1)), all_batches(renewed.validation(5))
    assert len(set(os.listdir(folder)) - set(written)) == 1
    uncached = photo_data(root, False)
    assert_same_batches(renewed_batches[0], all_batches(uncached.train(5, 0, 1)))
    assert_same_batches(renewed_batches[1], all_batches(uncached.validation(5)))
    assert not [name for name in os.listdir(folder) if name.startswith(".")]  # no temporary files left


def test_a_train_run_folder_holds_the_file_cache_and_a_resume_reads_it(image_files, tmp_path):
    root, _, _ = image_files
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10},
            "solver": {"base_lr": 0.05, "epochs": 2, "batch_size": 16},
            "data": {"folder": str(root), "image_size": [8, 8], "channels": 1, "cache": "file"}}
    validate(spec)  # reads no batches: writes no cache
    with pytest.raises(KeyboardInterrupt):
        train(spec, run_dir=tmp_path / "run", callbacks=[stop_after_one_epoch()], verbose=0)
    cache = tmp_path / "run" / "cache"
    written = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
    assert sorted(name.split("-")[0] for name in written) == ["training", "validation"]
    result = train(spec, run_dir=tmp_path / "run", resume=True, verbose=0)
    assert len(result.history) == 2 and np.isfinite(result.history["loss"]).all()
    assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == written


def test_the_builtin_digits_take_no_cache():
    with pytest.raises(SpecError, match=r"\$.data.cache: \"memory\" caches decoded image files; the builtin "
                                        r"digits are in memory already: remove it"):
        data_spec({"builtin": "digits", "cache": "memory"})
    assert data_spec({"builtin": "digits", "cache": False}).cache is False


def test_a_resume_may_turn_the_cache_on_and_nothing_else(image_files, tmp_path):
    root, _, _ = image_files
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10},
            "solver": {"base_lr": 0.05, "epochs": 2, "batch_size": 16},
            "data": {"folder": str(root), "image_size": [8, 8], "channels": 1}}
    with pytest.raises(KeyboardInterrupt):
        train(spec, run_dir=tmp_path / "run", callbacks=[stop_after_one_epoch()], verbose=0)
    faster = {**spec, "data": {**spec["data"], "cache": "file"}}
    with pytest.raises(RunError, match=r"differs from its spec.json at \$.stages\[0\].solver.base_lr\. Resume"):
        train({**faster, "solver": {**spec["solver"], "base_lr": 0.1}}, run_dir=tmp_path / "run", resume=True)
    result = train(faster, run_dir=tmp_path / "run", resume=True, verbose=0)
    assert len(result.history) == 2 and np.isfinite(result.history["loss"]).all()
    assert sorted(path.name.split("-")[0] for path in (tmp_path / "run" / "cache").iterdir()) == [
        "training", "validation"]
