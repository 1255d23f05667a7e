"""Bad input found before training: `validate` and `train` refuse the same
specs with the same errors, and `train` writes nothing for them."""

import json
import re
import urllib.error

import keras
import numpy as np
import pytest

from zoo.backbones import get_backbone
from zoo.datasets import load_digits
from zoo.spec import SpecError
from zoo.train import train, validate
from tests.zoo.conftest import write_spec


def spec_with(**sections):
    spec = {"backbone": {"name": "small_cnn"}, "head": {"classes": 10},
            "solver": {"base_lr": 0.01, "epochs": 1}, "data": {"builtin": "digits"}}
    return {**spec, **sections}


def refused(spec, tmp_path, path, pattern, **options):
    """Both `validate` and `train` raise the same `SpecError`, which has an
    error at JSON `path` matching `pattern`; `train` wrote nothing."""
    with pytest.raises(SpecError) as checked:
        validate(spec, **options)
    with pytest.raises(SpecError) as trained:
        train(spec, run_dir=tmp_path / "run", verbose=0, **options)
    assert checked.value.errors == trained.value.errors
    assert not (tmp_path / "run").exists()
    messages = [message for where, message in checked.value.errors if where == path]
    assert any(re.search(pattern, message) for message in messages), checked.value.errors
    return checked.value


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """Two class folders of 8x8 digit PNGs (zeros and ones), 12 images each."""
    root = tmp_path_factory.mktemp("digits")
    (x, y), _ = load_digits(validation_split=0.0, seed=0)
    for label in (0, 1):
        (root / f"digit_{label}").mkdir()
        for i, image in enumerate(x[y == label][:12]):
            keras.utils.save_img(root / f"digit_{label}" / f"{i}.png", np.round(image * 255), scale=False)
    return root


def folder_spec(root, classes=2, **data):
    return spec_with(head={"classes": classes},
                     data={"folder": str(root), "image_size": [8, 8], "channels": 1, **data})


def copy_of(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "images")


# --- the model side ------------------------------------------------------------

def test_head_classes_against_the_builtin_data(tmp_path):
    spec = spec_with(head={"classes": 3}, data={"builtin": "digits", "classes": [5, 6, 7, 8, 9]})
    refused(spec, tmp_path, "$.head.classes", r"3, but the data has 5 classes \(5, 6, 7, 8, 9\)")


def test_a_corrupt_weights_file_is_named(tmp_path):
    weights = tmp_path / "trunk.weights.h5"
    weights.write_text("not weights")
    refused(spec_with(backbone={"name": "small_cnn", "weights": str(weights)}), tmp_path,
            "$.backbone.weights", rf"{re.escape(str(weights))} is not an HDF5 weights file")


def test_weights_of_another_architecture_name_the_first_mismatching_layer(tmp_path):
    weights = str(tmp_path / "rgb.weights.h5")
    get_backbone("small_cnn").build(input_shape=(8, 8, 3)).save_weights(weights)
    error = refused(spec_with(backbone={"name": "small_cnn", "weights": weights}), tmp_path, "$.backbone.weights",
                    r"cannot be loaded into small_cnn: layer 'conv1' has weights \[\(3, 3, 1, 32\)\] in the model "
                    r"but \[\(3, 3, 3, 32\)\] in the file")
    assert len(str(error)) < 400


def test_an_input_below_the_backbone_minimum(tmp_path):
    spec = spec_with(backbone={"name": "mobilenet_v3_small", "weights": None, "input_shape": [28, 28, 3]})
    refused(spec, tmp_path, "$.backbone.input_shape", r"mobilenetv3small: Input size must be at least 32x32")


def test_imagenet_weights_without_a_network_say_where_to_get_them(tmp_path, monkeypatch):
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras-home"))  # an empty cache
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    spec = spec_with(backbone={"name": "mobilenet_v3_small", "weights": "imagenet", "input_shape": [32, 32, 3]})
    refused(spec, tmp_path, "$.backbone.weights",
            r"cannot be downloaded \(no network\?\)\. On a machine with a network, download "
            r"https://storage.googleapis.com/\S+no_top\S*\.h5 and set backbone.weights to the file's path")


def test_a_selector_that_matches_no_layer(tmp_path):
    refused(spec_with(frozen=[{"match": "conv9*"}]), tmp_path, "$.frozen[0].match", r"matches no layer")


def test_images_too_small_for_the_layer_a_saved_model_is_cut_at(tmp_path):
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 5, name="conv_a")(inputs)
    x = keras.layers.Conv2D(4, 5, name="conv_b")(x)
    path = str(tmp_path / "flexible.keras")
    keras.Model(inputs, x).save(path)
    spec = spec_with(backbone={"model": path, "cut_at": "conv_b"},
                     data={"builtin": "digits", "image_size": [8, 8]})
    refused(spec, tmp_path, "$.data.image_size", r"images of \(8, 8, 1\) are too small for the backbone")
    validate({**spec, "data": {"builtin": "digits", "image_size": [16, 16]}})


# --- hostile model files ----------------------------------------------------------

def lambda_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    return keras.Model(inputs, x)


def test_a_lambda_layer_is_refused_unless_unsafe(tmp_path):
    path = str(tmp_path / "lambda.keras")
    lambda_model().save(path)
    spec = spec_with(backbone={"model": path, "cut_at": "double"})
    refused(spec, tmp_path, "$.backbone.model", r"has a Lambda layer: loading it would run the Python code "
                                                r"stored in the file\. Refused; .* pass --unsafe")
    assert validate(spec, unsafe=True).model.get_layer("double")


def test_legacy_h5_models_load_with_the_same_safety(tmp_path):
    hostile, plain = str(tmp_path / "lambda.h5"), str(tmp_path / "plain.h5")
    lambda_model().save(hostile)
    model = lambda_model()
    keras.Model(model.input, model.get_layer("conv").output).save(plain)
    refused(spec_with(backbone={"model": hostile, "cut_at": "double"}), tmp_path, "$.backbone.model",
            r"has a Lambda layer")
    assert validate(spec_with(backbone={"model": plain, "cut_at": "conv"})).model.get_layer("conv")


def test_a_truncated_keras_file_is_named(tmp_path):
    whole, cut = tmp_path / "whole.keras", tmp_path / "cut.keras"
    lambda_model().save(whole)
    cut.write_bytes(whole.read_bytes()[:200])
    refused(spec_with(backbone={"model": str(cut), "cut_at": "conv"}), tmp_path, "$.backbone.model",
            rf"{re.escape(str(cut))} is not a readable .keras model \(truncated, or another format\)")


def test_a_weights_only_h5_given_as_a_model_says_where_it_goes(tmp_path):
    path = str(tmp_path / "trunk.h5")
    get_backbone("small_cnn").build().save_weights(str(tmp_path / "trunk.weights.h5"))
    (tmp_path / "trunk.weights.h5").rename(path)
    refused(spec_with(backbone={"model": path, "cut_at": "relu3"}), tmp_path, "$.backbone.model",
            r"is not a whole Keras model .*backbone.weights")


# --- data faults -----------------------------------------------------------------

def test_a_corrupt_image_is_reported_or_skipped(digit_folder, tmp_path):
    root = copy_of(digit_folder, tmp_path)
    (root / "digit_1" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "digit_0" / "empty.png").write_bytes(b"")
    error = refused(folder_spec(root), tmp_path, "$.data", r"2 unreadable or corrupt images: .*(broken|empty)")
    assert ("$.data.on_bad_file", 'fix or remove the files above, or set "skip" to train without them') \
        in error.errors
    checked = validate(folder_spec(root, on_bad_file="skip"))
    assert sorted(problem for _, problem in checked.data.skipped) == ["unreadable or corrupt image"] * 2
    assert checked.data.train_size + checked.data.validation_size == 24
    assert "Skipped 2 unreadable or corrupt images: " in checked.summary()
    result = train(folder_spec(root, on_bad_file="skip"), run_dir=tmp_path / "skipping", verbose=0)
    assert sorted(result.skipped) == sorted(checked.data.skipped)
    listed = (tmp_path / "skipping" / "skipped_files.csv").read_text().splitlines()
    assert listed[0] == "file,problem" and len(listed) == 3 and "broken.jpg" in "".join(listed)


def test_class_folders_against_the_head(digit_folder, tmp_path):
    for classes in (3, 5):
        refused(folder_spec(digit_folder, classes=classes), tmp_path, "$.head.classes",
                rf"{classes}, but the data has 2 classes \(digit_0, digit_1\)")
    root = copy_of(digit_folder, tmp_path)
    (root / "digit_2").mkdir()
    refused(folder_spec(root, classes=3), tmp_path, "$.data", r"1 empty class folder: .*digit_2")
    assert validate(folder_spec(root, classes=2, on_bad_file="skip")).data.class_names == ["digit_0", "digit_1"]


def test_listing_faults_name_their_lines(digit_folder, tmp_path):
    listing = tmp_path / "train.txt"
    lines = [f"digit_{label}/{i}.png {label}" for label in (0, 1) for i in range(12)]
    lines[3] = "digit_0/3.png -1"         # a negative label
    lines[5] = "digit_0/missing.png 0"    # no such file
    lines[6] = "digit_0/gone.png 0"       # no such file
    lines[7] = "digit_0/7.png"            # no label
    listing.write_text("\n".join(lines) + "\n")
    spec = spec_with(head={"classes": 2}, data={"listing": str(listing), "root": str(digit_folder),
                                                "image_size": [8, 8], "channels": 1})
    error = refused(spec, tmp_path, "$.data", r"1 negative label: .*train.txt:4: -1")
    text = str(error)
    assert re.search(r"2 missing files: \S+missing.png, \S+gone.png", text)
    assert re.search(r"1 line without a label: .*train.txt:8", text)
    skipped = validate({**spec, "data": {**spec["data"], "on_bad_file": "skip"}}).data.skipped
    assert len(skipped) == 4


def test_integer_labels_beyond_the_head_are_a_head_error_not_bad_files(digit_folder, tmp_path):
    listing = tmp_path / "train.txt"
    lines = [f"digit_{label}/{i}.png {label}" for label in (0, 1) for i in range(12)]
    lines[2] = "digit_0/2.png 7"  # a typo, or a head too small
    listing.write_text("\n".join(lines) + "\n")
    data = {"listing": str(listing), "root": str(digit_folder), "image_size": [8, 8], "channels": 1}
    for on_bad_file in ("error", "skip"):
        refused(spec_with(head={"classes": 2}, data={**data, "on_bad_file": on_bad_file}), tmp_path,
                "$.head.classes", r"2, but \S+train.txt has labels of 2 or more: 1 line: \S+train.txt:3: 7")
    refused(spec_with(head={"classes": 9}, data=data), tmp_path, "$.head.classes",
            r"9, but the data has 8 classes \(0, 1, 2, 3, 4, 5, 6, 7\)")


def test_a_validation_split_that_leaves_no_images(digit_folder, tmp_path):
    refused(folder_spec(digit_folder, validation_split=0.01), tmp_path, "$.data.validation_split",
            r"no validation images: 24 usable in all")


def test_a_csv_without_the_label_column(digit_folder, tmp_path):
    table = tmp_path / "images.csv"
    table.write_text("path,klass\n" + "\n".join(f"digit_0/{i}.png,zero" for i in range(12)) + "\n")
    spec = spec_with(head={"classes": 1}, data={"csv": str(table), "root": str(digit_folder),
                                                "image_size": [8, 8], "channels": 1})
    refused(spec, tmp_path, "$.data.label_column", r"images.csv has no column 'label'; its columns: path, klass")


def test_the_cli_says_which_tier_ran(tmp_path, capsys):
    from zoo.cli import main

    path = write_spec(tmp_path, spec_with())
    assert main(["validate", str(path)]) == 0
    assert "valid (deep: model built" in capsys.readouterr().out
    assert main(["validate", "--quick", str(path)]) == 0
    assert "valid (quick: schema and rules" in capsys.readouterr().out
    bad = write_spec(tmp_path, spec_with(head={"classes": 4}), "bad.json")
    assert main(["validate", str(bad)]) == 1
    assert f"1 error in {bad}:\n  $.head.classes: 4, but the data has 10 classes" in capsys.readouterr().err
    assert json.loads(bad.read_text())["head"] == {"classes": 4}


def test_tune_checks_the_spec_before_any_trial(tmp_path):
    from zoo.tune import tune

    spec = spec_with(head={"classes": 4}, search={"tuner": "random", "max_trials": 2, "space": {
        "solver.base_lr": {"type": "float", "min": 0.001, "max": 0.1}}})
    with pytest.raises(SpecError, match=r"\$.head.classes: 4, but the data has 10 classes"):
        tune(spec, directory=tmp_path / "search", verbose=0)
    assert not (tmp_path / "search").exists()


def test_validation_labels_must_be_training_classes(digit_folder, tmp_path):
    names = {0: "zero", 1: "one"}
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(
        f"digit_{d}/{i}.png,{names[d]}" for d in (0, 1) for i in range(10)) + "\n")
    (tmp_path / "val.csv").write_text("path,label\ndigit_0/10.png,zero\ndigit_1/10.png,two\n")
    spec = spec_with(head={"classes": 2}, data={
        "csv": str(tmp_path / "train.csv"), "root": str(digit_folder), "image_size": [8, 8], "channels": 1,
        "validation": {"csv": str(tmp_path / "val.csv"), "root": str(digit_folder)}})
    refused(spec, tmp_path, "$.data.validation", r"1 label not among the training classes: .*val.csv:3: two")


def test_an_hdf5_file_that_is_not_keras_weights(tmp_path):
    import h5py

    path = tmp_path / "other.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_group("vars").attrs["name"] = "conv1"  # a Keras-like group with no numbered weights
        f["vars"]["kernel"] = np.zeros(3)
    refused(spec_with(backbone={"name": "small_cnn", "weights": str(path)}), tmp_path, "$.backbone.weights",
            rf"{re.escape(str(path))} cannot be loaded into small_cnn: ")
