"""Small-data experiments in a spec: subsets of the builtin digits, an
image size read from the files, and a saved model's own preprocessing."""

import re

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from zoo.data import load_data, scale_and_offset
from zoo.datasets import DIGITS_PER_CLASS, load_digits
from zoo.sections import Normalization
from zoo.small_cnn import small_cnn
from zoo.spec import SpecError, load_spec
from zoo.train import validate

SOLVER = {"base_lr": 0.01, "epochs": 1}


def spec_with(data, backbone=None, classes=10):
    return {"backbone": backbone or {"name": "small_cnn"}, "head": {"classes": classes}, "solver": SOLVER,
            "data": data}


def loaded(data, seed=0, channels=1):
    """The `ImageData` of a JSON `data` section."""
    return load_data(load_spec(spec_with(data)).data, seed=seed, channels=channels)


def all_batches(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def splits(data, seed=0):
    """`((x, y), (x_val, y_val))` of a JSON `data` section, through the pipeline."""
    images = loaded(data, seed)
    return all_batches(images.train(64, 0, 1)), all_batches(images.validation(64))


def keys(images):
    """Each image as bytes: the digits are 1,797 distinct images."""
    return {image.tobytes() for image in images}


@pytest.fixture(scope="module")
def digit_of():
    """Image bytes -> the digit it shows, over all the digits."""
    digits = sklearn_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    assert len(keys(x)) == len(x)
    return {image.tobytes(): label for image, label in zip(x, digits.target)}


# --- subsets of the builtin digits -------------------------------------------


def test_the_class_counts_are_scikit_learns():
    assert DIGITS_PER_CLASS == tuple(np.bincount(sklearn_digits().target))


def test_per_class_takes_as_many_of_each_class_and_validation_count_others():
    (x, y), (x_val, y_val) = splits({"builtin": "digits", "per_class": 20, "validation_count": 500})
    assert np.bincount(y).tolist() == [20] * 10
    assert len(x_val) == 500 and len(y_val) == 500
    assert len(keys(x)) == 200 and not keys(x) & keys(x_val)


def test_a_subset_is_the_same_for_a_seed_and_another_for_another_seed():
    data = {"builtin": "digits", "per_class": 5, "validation_count": 50}
    (x, _), (x_val, _) = splits(data, seed=1)
    (again, _), (again_val, _) = splits(data, seed=1)
    (other, _), (other_val, _) = splits(data, seed=2)
    assert keys(x) == keys(again) and keys(x_val) == keys(again_val)
    assert keys(x) != keys(other) and keys(x_val) != keys(other_val)


def test_classes_compose_with_per_class_and_limit(digit_of):
    (x, y), (x_val, y_val) = splits({"builtin": "digits", "classes": [8, 3], "per_class": 30,
                                     "validation_count": 100})
    assert np.bincount(y).tolist() == [30, 30]
    # Relabelled in the order given: 8 is 0, 3 is 1.
    assert [digit_of[image.tobytes()] for image in x] == [(8, 3)[label] for label in y]
    assert {digit_of[image.tobytes()] for image in x_val} == {3, 8} and len(x_val) == 100
    assert not keys(x) & keys(x_val)
    (x, y), (x_val, _) = splits({"builtin": "digits", "classes": [8, 3], "limit": 40})
    assert len(x) == 40 and set(y) <= {0, 1}
    # validation_split of the 357 digits of classes 3 and 8, none of them a training image.
    assert len(x_val) == round(0.2 * (DIGITS_PER_CLASS[3] + DIGITS_PER_CLASS[8]))
    assert not keys(x) & keys(x_val)


def test_validation_count_alone_leaves_the_rest_for_training():
    (x, _), (x_val, _) = splits({"builtin": "digits", "validation_count": 97})
    assert len(x_val) == 97 and len(x) == 1797 - 97 and not keys(x) & keys(x_val)


@pytest.mark.parametrize("data, path, message", [
    ({"per_class": 175, "classes": [2, 8]}, "$.data.per_class",
     "175 training images of each class, but digit 8 has 174"),
    ({"per_class": 179}, "$.data.per_class",
     "179 training images of each class, but digit 0 has 178, digit 2 has 177, digit 8 has 174"),
    ({"per_class": 100, "validation_count": 1000}, "$.data.validation_count",
     "1,000 validation images and 1,000 training images (100 of each of 10 classes) are more than the 1,797 "
     "digits: 797 are left for validation"),
    ({"limit": 300, "classes": [0, 1]}, "$.data.validation_split",
     "72 validation images and 300 training images are more than the 360 digits of classes [0, 1]: 60 are left"),
    ({"limit": 2000}, "$.data.limit", "2,000 training images, but there are only the 1,797 digits"),
    ({"validation_count": 1797}, "$.data.validation_count", "leave no training images"),
    ({"per_class": 10, "limit": 100}, "$.data.limit", "give one of them"),
    ({"validation_count": 100, "validation_split": 0.1}, "$.data.validation_count", "not with `validation_split`"),
])
def test_a_subset_the_digits_cannot_give_is_an_error_at_its_path(data, path, message):
    with pytest.raises(SpecError) as caught:
        load_spec(spec_with({"builtin": "digits", **data}))
    assert caught.value.errors == [(path, caught.value.errors[0][1])] and message in caught.value.errors[0][1]


def test_subsets_are_of_the_builtin_digits_only(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(spec_with({"folder": str(tmp_path), "per_class": 5, "limit": 9, "validation_count": 5}))
    errors = dict(caught.value.errors)
    assert all(errors[f"$.data.{key}"] == "only with `builtin`" for key in ("per_class", "limit", "validation_count"))


def test_load_digits_refuses_the_same_subsets():
    with pytest.raises(ValueError, match=r"Argument `per_class`: 180 training images of each class, but "):
        load_digits(per_class=180)


# --- data.image_size from the files ------------------------------------------


def write_images(folder, sizes):
    """PNG files of the given `(height, width)`s, alternately in class folders a and b."""
    for index, size in enumerate(sizes):
        (folder / "ab"[index % 2]).mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(index).integers(0, 256, (*size, 1))
        keras.utils.save_img(folder / "ab"[index % 2] / f"{index}.png", pixels, scale=False)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Saved small CNNs: 8x8 gray, 8x8 RGB, and gray of any size."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, shape in (("gray", (8, 8, 1)), ("rgb", (8, 8, 3)), ("any_size", (None, None, 1))):
        paths[name] = str(folder / f"{name}.keras")
        small_cnn(shape, width=4).save(paths[name])
    return paths


def test_image_size_is_the_files_own_when_all_have_one(tmp_path, models):
    folder = write_images(tmp_path / "images", [(12, 10)] * 8)
    data = validate(spec_with({"folder": str(folder), "validation_split": 0.25},
                              {"model": models["any_size"], "cut_at": "features"}, classes=2)).data
    assert data.image_shape == (12, 10, 1)
    images, _ = next(iter(data.train(8, 0, 1)))
    assert images.shape == (6, 12, 10, 1)


def test_files_of_several_sizes_need_an_image_size(tmp_path, models):
    folder = write_images(tmp_path / "images", [(12, 10)] * 5 + [(9, 9)] * 2 + [(16, 16)])
    spec = spec_with({"folder": str(folder), "validation_split": 0.25},
                     {"model": models["any_size"], "cut_at": "features"}, classes=2)
    with pytest.raises(SpecError) as caught:
        validate(spec)
    assert caught.value.errors == [("$.data.image_size", "not given, and the image files have 3 sizes (height x "
                                                          "width: 12x10: 5 files, 9x9: 2 files, 16x16: 1 file): set "
                                                          "data.image_size to resize them to one")]
    spec["data"]["image_size"] = [9, 9]
    assert validate(spec).data.image_shape == (9, 9, 1)


def test_a_backbone_of_a_fixed_size_resizes_files_of_several_sizes(tmp_path, models):
    folder = write_images(tmp_path / "images", [(12, 10), (9, 9)] * 2)
    data = validate(spec_with({"folder": str(folder), "validation_split": 0.5},
                              {"model": models["gray"], "cut_at": "features"}, classes=2)).data
    assert data.image_shape == (8, 8, 1)


# --- normalization and a saved model's preprocessing ---------------------------


def digits_batches(backbone, data, channels=1):
    """The first validation batch of the digits with `data` and, for comparison, with
    `normalization: "none"` (pixels in [0, 1])."""
    spec = spec_with({"builtin": "digits", "channels": channels, **data}, backbone)
    plain = {**spec, "data": {**spec["data"], "normalization": "none"}}
    images, _ = next(iter(validate(spec).data.validation(16)))
    pixels, _ = next(iter(validate(plain).data.validation(16)))
    return np.asarray(images), np.asarray(pixels)


@pytest.mark.parametrize("preprocessing, expected", [
    ({"mean": 0.5, "std": 0.25}, lambda x: (x - 0.5) / 0.25),
    ({"scale": 0.00784313725490196, "offset": -1}, lambda x: x * 2 - 1),  # [-1, 1]
    ({"scale": 0.00392156862745098, "offset": 0}, lambda x: x),  # [0, 1]
])
def test_a_saved_models_preprocessing_is_its_backbone_normalization(models, preprocessing, expected):
    images, pixels = digits_batches({"model": models["gray"], "cut_at": "relu3", "preprocessing": preprocessing},
                                    {"normalization": "backbone"})
    np.testing.assert_allclose(images, expected(pixels), atol=1e-5)
    assert images.std() > 0.1


def test_per_channel_preprocessing_and_normalization(models):
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    expected = lambda x: (x - np.array(imagenet["mean"])) / np.array(imagenet["std"])
    backbone = {"model": models["rgb"], "cut_at": "relu3"}
    images, pixels = digits_batches({**backbone, "preprocessing": imagenet}, {"normalization": "backbone"}, 3)
    assert pixels.shape[-1] == 3
    np.testing.assert_allclose(images, expected(pixels), atol=1e-5)
    images, _ = digits_batches(backbone, {"normalization": imagenet}, 3)
    np.testing.assert_allclose(images, expected(pixels), atol=1e-5)
    per_channel_scale = {"scale": [0.01, 0.02, 0.03], "offset": [-1, 0, 1]}
    images, _ = digits_batches(backbone, {"normalization": per_channel_scale}, 3)
    np.testing.assert_allclose(images, pixels * 255 * np.array([0.01, 0.02, 0.03]) + np.array([-1, 0, 1]),
                               atol=1e-5)


def test_per_channel_values_need_one_value_per_channel(models):
    three = {"mean": [0.1, 0.2, 0.3], "std": 0.5}
    with pytest.raises(SpecError) as caught:
        validate(spec_with({"builtin": "digits", "normalization": three}))
    assert caught.value.errors == [("$.data.normalization.mean", "3 values, one per channel, for images of 1 channel")]
    with pytest.raises(SpecError) as caught:
        validate(spec_with({"builtin": "digits", "normalization": "backbone"},
                           {"model": models["gray"], "cut_at": "relu3", "preprocessing": three}))
    assert caught.value.errors == [("$.backbone.preprocessing.mean",
                                    "3 values, one per channel, for images of 1 channel")]


@pytest.mark.parametrize("values, message", [
    ({"mean": 0.5}, "Give `mean` and `std` (on [0, 1] pixels) or `scale` and `offset` (on [0, 255] pixels). "
                    "Received: mean=0.5"),
    ({"mean": 0.5, "std": 1, "scale": 2}, "Received: mean=0.5, std=1, scale=2"),
    ({"mean": [0.5, 0.5], "std": [1, 1, 1]}, "Per-channel values must have the same length"),
])
def test_normalization_takes_one_whole_form(models, values, message):
    for spec, path in ((spec_with({"builtin": "digits", "normalization": values}), "$.data.normalization"),
                       (spec_with({"builtin": "digits"}, {"model": models["gray"], "cut_at": "relu3",
                                                          "preprocessing": values}), "$.backbone.preprocessing")):
        with pytest.raises(SpecError) as caught:
            load_spec(spec)
        assert [error for error in caught.value.errors if message in error[1]] == [
            (path, caught.value.errors[0][1])], caught.value.errors


def test_normalization_backbone_of_a_saved_model_without_preprocessing_says_how_to_give_it(models):
    with pytest.raises(SpecError) as caught:
        load_spec(spec_with({"builtin": "digits", "normalization": "backbone"},
                            {"model": models["gray"], "cut_at": "relu3"}))
    ((path, message),) = caught.value.errors
    assert path == "$.data.normalization"
    assert message.startswith("\"backbone\" needs a backbone that knows its input preprocessing")
    assert "give it in `backbone.preprocessing`" in message
    with pytest.raises(SpecError, match=re.escape("$.backbone.preprocessing: not with `name`")):
        load_spec(spec_with({"builtin": "digits"}, {"name": "small_cnn", "preprocessing": {"mean": 0, "std": 1}}))


def test_scale_and_offset_is_the_same_normalization_per_channel():
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 5, 5, 3))
    for normalization in (Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
                          Normalization(mean=0.5, std=(0.1, 0.2, 0.3)),
                          Normalization(scale=(0.01, 0.02, 0.03), offset=-1.0)):
        scale, offset = scale_and_offset(normalization)
        mean, std = normalization.mean_and_std()
        np.testing.assert_allclose(pixels * np.array(scale) + np.array(offset),
                                   (pixels / 255 - np.array(mean)) / np.array(std), rtol=1e-6, atol=1e-9)
    assert scale_and_offset("none") == (1 / 255, 0.0) and scale_and_offset("backbone") is None


def test_a_preset_folders_converter_takes_per_channel_scale_and_offset():
    from keras_hub.layers import ImageConverter
    from zoo.backbones.kerashub import converted

    imagenet = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    converter = converted(ImageConverter(image_size=(5, 5)), (5, 5), scale_and_offset(imagenet))
    reloaded = ImageConverter.from_config(converter.get_config())  # as a preset folder stores it
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    np.testing.assert_allclose(reloaded(pixels), (pixels / 255 - np.array(imagenet.mean)) / np.array(imagenet.std),
                               atol=1e-5)
