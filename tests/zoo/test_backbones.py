"""The backbone registry: its three sources, their cut points, their failure
messages, `zoo list`, and the fine-tuned model handed back as `model.keras`
and as a KerasHub preset folder. Nothing here touches the network: KerasHub
presets are small models written to folders by the test."""

import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from tests.zoo.conftest import save_tiny_resnet_preset, stop_after_one_epoch, write_spec
from tests.zoo.test_faults import refused, spec_with
from zoo import backbones
from zoo.backbones import build_trunk, get_backbone, list_backbones
from zoo.backbones import kerashub, kerashub_presets
from zoo.backbones.applications import MODELS, REGISTRY
from zoo.cli import main
from zoo.sections import from_dict
from zoo.sections import Backbone as BackboneSection
from zoo.small_cnn import small_cnn
from zoo.spec import SpecError, load_spec
from zoo.train import build_model, train, validate


def preset_spec(preset, **changes):
    spec = spec_with(backbone={"preset": str(preset)},
                     data={"builtin": "digits", "normalization": "backbone", "validation_split": 0.2})
    spec["solver"] = {"base_lr": 0.01, "epochs": 1, "batch_size": 64}
    return {**spec, **changes}


def trunk(**backbone):
    return build_trunk(from_dict(BackboneSection, backbone))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, even on a machine that has one: every download goes to a
    proxy that refuses connections, and the KerasHub cache is empty."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- the registry --------------------------------------------------------------


def test_each_spec_key_has_one_source():
    assert list(backbones.SOURCES) == ["name", "model", "preset"]
    assert backbones.source_for({"preset": "x"}) is backbones.SOURCES["preset"]
    assert backbones.source_for(BackboneSection(model="m.keras", cut_at="x")) is backbones.SOURCES["model"]


@pytest.mark.parametrize("backbone, path, message", [
    ({"name": "small_cnn", "preset": "resnet_18_imagenet"}, "$.backbone",
     "give exactly one of `name`, `model`, `preset`; got name, preset"),
    ({}, "$.backbone", "got none"),
    ({"preset": "resnet_18_imagenet", "weights": "imagenet"}, "$.backbone.weights",
     "not with `preset`; it takes cut_at, input_shape"),
    ({"model": "m.keras", "cut_at": "x", "input_shape": [8, 8, 1]}, "$.backbone.input_shape", "not with `model`"),
    ({"preset": "resnet_50_imagenett"}, "$.backbone.preset", "did you mean resnet_50_imagenet"),
    ({"preset": "bert_base_en"}, "$.backbone.preset", "is a BertBackbone preset, not an image backbone"),
    ({"preset": "./no/such/preset"}, "$.backbone.preset", "no such preset folder: ./no/such/preset"),
])
def test_each_source_checks_its_own_keys(tmp_path, backbone, path, message):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, spec_with(backbone=backbone)))
    errors = dict(caught.value.errors)
    assert message in errors.get(path, ""), caught.value.errors


def test_a_handle_is_not_checked_against_the_builtin_names(tmp_path):
    for handle in ("kaggle://keras/resnetv2/keras/resnet_18_imagenet/2", "hf://timm/resnet18.a1_in1k"):
        assert load_spec(spec_with(backbone={"preset": handle})).backbone.preset == handle


def test_a_preset_folder_is_resolved_against_the_spec_file(tmp_path, tiny_preset):
    (tmp_path / "specs").mkdir()
    os.symlink(tiny_preset, tmp_path / "tiny")
    spec = load_spec(write_spec(tmp_path / "specs", spec_with(backbone={"preset": "../tiny"})))
    assert spec.backbone.preset == str(tmp_path / "tiny")


def test_keras_applications_entries_know_their_preprocessing_and_size():
    assert get_backbone("MobileNet_V3-Small").name == "mobilenetv3small"
    assert get_backbone("inception_v3").input_size == (299, 299, 3)
    assert get_backbone("resnet50").preprocess_input is keras.applications.resnet50.preprocess_input
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet5'. Did you mean resnet50"):
        get_backbone("resnet5")


@pytest.mark.parametrize("name", ["mobilenetv3small", "mobilenet", "small_cnn"])
def test_listed_parameter_counts_are_those_of_the_built_models(name):
    entry = get_backbone(name)
    assert entry.params == entry.build().count_params()


def test_the_applications_table_is_keras_applications():
    # The registry is a static table, so that the quick checks and `zoo list` import no Keras.
    constructors = {name: getattr(keras.applications, name) for name in dir(keras.applications)
                    if name[0].isupper() and callable(getattr(keras.applications, name))}
    assert sorted(MODELS) == sorted(constructors)
    for name, constructor in constructors.items():
        entry = get_backbone(name)
        assert entry.constructor is constructor
        assert MODELS[name][0] == constructor.__module__.rsplit(".", 1)[-1]
        assert entry.preprocess_input is getattr(keras.applications, MODELS[name][0]).preprocess_input
    assert get_backbone("small_cnn").constructor is small_cnn
    assert len(REGISTRY) == len(MODELS) + 1


def test_the_kerashub_table_is_the_installed_keras_hubs():
    # `python -m zoo.backbones.kerashub` writes it afresh after a keras-hub upgrade.
    assert kerashub_presets.KERAS_HUB == importlib.metadata.version("keras-hub")
    assert kerashub.live_presets() == (kerashub_presets.IMAGE, kerashub_presets.OTHER)
    assert kerashub.presets() == (kerashub_presets.IMAGE, kerashub_presets.OTHER)


def test_list_shows_both_sources_with_family_size_and_parameters():
    entries = {(e.source, e.name): e for e in list_backbones()}
    resnet = entries[("keras_hub", "resnet_50_imagenet")]
    assert (resnet.family, resnet.input_size, resnet.params) == ("resnet", (224, 224), 23561152)
    assert entries[("keras.applications", "resnet50")].params == MODELS["ResNet50"][1]
    assert entries[("zoo", "small_cnn")].input_size == (8, 8)
    assert {"vit", "efficientnet", "dinov2", "mobilenet"} <= {e.family for e in entries.values()}
    assert len([e for e in entries.values() if e.source == "keras_hub"]) == 105  # KerasHub 0.32's image presets
    # Text models are not backbones a spec can fine-tune on images.
    assert not any(e.family in ("bert", "gemma") for e in entries.values())


def test_list_filter_is_a_case_insensitive_substring_unless_it_holds_a_wildcard():
    names = {(e.source, e.name) for e in list_backbones("ResNet50")}
    assert {("keras.applications", "resnet50"), ("keras.applications", "resnet50v2"),
            ("keras_hub", "resnet_50_imagenet")} <= names
    assert {e.name for e in list_backbones("resnet5*", source="keras.applications")} == {"resnet50", "resnet50v2"}
    assert {e.source for e in list_backbones("resnet", source="keras_hub")} == {"keras_hub"}
    with pytest.raises(ValueError, match="Unknown source 'hub'; the sources are keras.applications, keras_hub, zoo"):
        list_backbones(source="hub")


def test_zoo_list_command(capsys):
    assert main(["list", "resnet_50"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"keras\.applications\s+resnet50\s+resnet\s+224x224\s+23\.6M\s+imagenet", out)
    assert re.search(r"keras_hub\s+resnet_50_imagenet\s+resnet\s+224x224\s+23\.6M\s+preset", out)
    assert main(["list", "efficientnet", "--source", "keras_hub"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_b0_ra_imagenet" in out and "keras.applications" not in out
    assert main(["list", "nothing-like-this"]) == 1
    assert "No backbone matches 'nothing-like-this'" in capsys.readouterr().err
    assert main(["list", "--source", "hub"]) == 2
    assert "Unknown source 'hub'; the sources are keras.applications, keras_hub, zoo." in capsys.readouterr().err


# --- cut points -----------------------------------------------------------------


def test_a_preset_is_cut_at_its_feature_output_a_layer_or_a_pyramid_level(tiny_preset):
    assert trunk(preset=str(tiny_preset)).model.output.shape == (None, None, None, 16)
    assert trunk(preset=str(tiny_preset), cut_at="stack0_block0_out").model.output.shape == (None, None, None, 64)
    assert trunk(preset=str(tiny_preset), cut_at="P3").model.output.shape == (None, None, None, 16)
    assert trunk(preset=str(tiny_preset), cut_at="P2").model.output.shape == (None, None, None, 64)


def test_a_backbone_of_several_outputs_is_cut_at_one(tmp_path, tiny_preset):
    from keras_hub.models import Backbone, RetinaNetBackbone

    folder = str(tmp_path / "fpn")
    RetinaNetBackbone(image_encoder=Backbone.from_preset(str(tiny_preset)), min_level=2, max_level=3,
                      use_p5=False).save_to_preset(folder)
    refused(spec_with(backbone={"preset": folder}), tmp_path, "$.backbone.cut_at",
            "fpn has several outputs; give the layer or pyramid level the head goes on")
    assert trunk(preset=folder, cut_at="P3").model.output.shape == (None, None, None, 256)


def test_random_crop_is_checked_against_the_size_the_preset_gives(tmp_path, tiny_preset):
    crop = preset_spec(tiny_preset, data={"builtin": "digits", "augment": {"random_crop": [28, 28]}})
    assert validate(crop).data.image_shape == (28, 28, 3)  # of 32x32 images
    crop["data"]["augment"]["random_crop"] = [40, 40]
    refused(crop, tmp_path, "$.data.augment.random_crop", r"\[40, 40\] is larger than the images, \[32, 32\]")


def test_flatten_needs_features_of_a_fixed_size(tmp_path, tiny_preset):
    refused(preset_spec(tiny_preset, head={"classes": 10, "pooling": "flatten"}), tmp_path, "$.head.pooling",
            r"\"flatten\" needs features of a fixed size, but the backbone's are \(None, None, 16\): set "
            "backbone.input_shape, or use avg or max")


def test_token_pooling_needs_a_fixed_number_of_tokens(tmp_path):
    inputs = keras.Input((None, None, 3))
    tokens = keras.layers.Reshape((-1, 4), name="tokens")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    keras.Model(inputs, tokens).save(tmp_path / "tokens.keras")
    refused(spec_with(backbone={"model": str(tmp_path / "tokens.keras"), "cut_at": "tokens"},
                      head={"classes": 10, "pooling": "token"}, data={"builtin": "digits", "image_size": [8, 8]}),
            tmp_path, "$.head.pooling", r"\"token\" needs a fixed number of tokens; set backbone.input_shape")


def test_a_preset_takes_an_input_shape(tiny_preset):
    assert trunk(preset=str(tiny_preset), input_shape=[40, 48, 3]).model.input_shape == (None, 40, 48, 3)
    # ... which the images then take, rather than the converter's 32x32.
    spec = preset_spec(tiny_preset, backbone={"preset": str(tiny_preset), "input_shape": [40, 48, 3]})
    assert validate(spec).data.image_shape == (40, 48, 3)


def test_a_keras_application_can_be_cut_at_a_layer():
    cut = trunk(name="mobilenet_v3_small", input_shape=[32, 32, 3], cut_at="expanded_conv_project_bn")
    assert cut.model.output.shape == (None, 8, 8, 16)


def test_bad_cut_points_name_what_there_is(tmp_path, tiny_preset):
    refused(preset_spec(tiny_preset, backbone={"preset": str(tiny_preset), "cut_at": "P7"}), tmp_path,
            "$.backbone.cut_at", r"no pyramid level 'P7' in .*tiny_resnet \(ResNetBackbone\): its levels are P2, P3")
    refused(preset_spec(tiny_preset, backbone={"preset": str(tiny_preset), "cut_at": "stack0_block0_outt"}),
            tmp_path, "$.backbone.cut_at", r"no layer 'stack0_block0_outt' in .*; close: stack0_block0_out")


def test_token_pooling_and_the_pyramid_of_a_transformer(tmp_path):
    from keras_hub.models import ViTBackbone

    folder = str(tmp_path / "vit")
    ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=8,
                mlp_dim=16).save_to_preset(folder)
    spec = preset_spec(folder, head={"classes": 10, "pooling": "token"},
                       data={"builtin": "digits", "image_size": [32, 32]})
    model = build_model(spec)
    assert model.get_layer("head_token").output.shape == (None, 1, 8)  # the class token of 17
    assert build_model({**spec, "head": {"classes": 10}}).get_layer("head_pool").output.shape == (None, 8)
    refused({**spec, "backbone": {"preset": folder, "cut_at": "P4"}}, tmp_path, "$.backbone.cut_at",
            r"ViTBackbone\): it has no feature pyramid; cut at a layer")
    # A ViT run's preset folder is KerasHub's ViT classifier, on the class token.
    result = train({**spec, "data": {"builtin": "digits", "image_size": [32, 32], "classes": [0, 1]},
                    "head": {"classes": 2, "pooling": "token"}}, run_dir=tmp_path / "vit", verbose=0)
    from keras_hub.models import ImageClassifier

    classifier = ImageClassifier.from_preset(str(tmp_path / "vit" / "preset"))
    assert (type(classifier).__name__, classifier.pooling) == ("ViTImageClassifier", "token")
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(classifier.predict(images, verbose=0),
                               result.model.predict(images / 255.0, verbose=0), atol=1e-5)
    refused(spec_with(head={"classes": 10, "pooling": "token"}), tmp_path, "$.head.pooling",
            r"the backbone's features have the shape \(4, 4, 64\): use avg, max or flatten")


# --- preprocessing and image size from the preset ----------------------------------


def test_backbone_normalization_is_the_presets_image_converter(tiny_preset):
    from keras_hub.layers import ImageConverter

    spec = preset_spec(tiny_preset)
    runner_data = validate(spec).data
    images, _ = next(iter(runner_data.validation(8)))
    assert images.shape[1:] == (32, 32, 3)  # the converter's size, as data.image_size does not say
    converter = ImageConverter.from_preset(str(tiny_preset))
    plain = validate({**spec, "data": {**spec["data"], "normalization": "none", "image_size": [32, 32]}}).data
    pixels, _ = next(iter(plain.validation(8)))
    np.testing.assert_allclose(images, converter(np.asarray(pixels) * 255.0), atol=1e-4)


def test_a_preset_without_an_image_converter(tmp_path, tiny_preset):
    import shutil

    folder = shutil.copytree(tiny_preset, tmp_path / "bare")
    os.remove(folder / "image_converter.json")
    refused(preset_spec(folder), tmp_path, "$.data.normalization",
            r"the backbone has no preprocessing of its own \(for a preset: it was saved without "
            r"image_converter.json\)")
    # No size from the preset: the files' own, which must be one.
    digits = tmp_path / "digits"
    for name, size in (("a", 32), ("b", 36)):
        (digits / name).mkdir(parents=True)
        keras.utils.save_img(digits / name / "0.png", np.zeros((size, size, 3)), scale=False)
    refused(preset_spec(folder, data={"folder": str(digits), "normalization": "none", "validation_split": 0.5}),
            tmp_path, "$.data.image_size", r"not given, and the image files have 2 sizes \(height x width: "
                                           r"32x32: 1 file, 36x36: 1 file\): set data.image_size")


def test_normalization_backbone_needs_a_source_that_knows_it(tmp_path):
    spec = spec_with(backbone={"model": str(tmp_path / "m.keras"), "cut_at": "x"},
                     data={"builtin": "digits", "normalization": "backbone"})
    with pytest.raises(SpecError, match=r"\$.data.normalization: \"backbone\" needs a backbone that knows its "
                                        r"input preprocessing \(`backbone.name` or `backbone.preset`\)"):
        load_spec(spec)


# --- no network -------------------------------------------------------------------


def test_a_builtin_preset_without_a_network_says_how_to_get_it(tmp_path, offline):
    error = refused(spec_with(backbone={"preset": "resnet_18_imagenet"}), tmp_path, "$.backbone.preset",
                    r"cannot download the KerasHub preset 'resnet_18_imagenet' \(no network\?\)")
    message = dict(error.errors)["$.backbone.preset"]
    assert message.endswith(
        "On a machine with a network, run: python -c 'import keras_hub as h; p, d = \"resnet_18_imagenet\", "
        "\"resnet_18_imagenet\"; h.models.Backbone.from_preset(p).save_to_preset(d); "
        "h.layers.ImageConverter.from_preset(p).save_to_preset(d)'; then copy the folder resnet_18_imagenet/ "
        "beside the spec and set backbone.preset to \"./resnet_18_imagenet\"."), message


def test_the_example_spec_trains_offline_on_a_preset_folder_beside_it(tmp_path, tiny_preset):
    import shutil

    # As the README says: the folder beside the spec, and "preset": "./resnet_18_imagenet".
    shutil.copytree(tiny_preset, tmp_path / "resnet_18_imagenet")
    example = json.loads(open(os.path.join(os.path.dirname(__file__), "..", "..", "specs",
                                           "kerashub_finetune.json")).read())
    example["backbone"]["preset"] = "./resnet_18_imagenet"
    example["solver"]["epochs"] = 1  # of the example's 3
    result = train(write_spec(tmp_path, example), run_dir=tmp_path / "run", verbose=0)
    assert len(result.history) == 1 and result.no_preset is None
    assert json.loads((tmp_path / "run" / "preset" / "class_names.json").read_text()) == [str(d) for d in range(10)]


def test_the_download_command_writes_a_folder_a_spec_can_use(tmp_path, tiny_preset, offline, monkeypatch):
    with pytest.raises(SpecError) as caught:
        validate(spec_with(backbone={"preset": "resnet_18_imagenet"}))
    message = dict(caught.value.errors)["$.backbone.preset"]
    python, flag, code = shlex.split(re.search(r"run: (python -c .*); then", message).group(1))
    # The command itself, run here on a folder: the offline stand-in for the preset name.
    monkeypatch.chdir(tmp_path)
    exec(code.replace('p, d = "resnet_18_imagenet"', f'p, d = "{tiny_preset}"'), {})
    assert validate(preset_spec("./resnet_18_imagenet")).data.image_shape == (32, 32, 3)


def test_a_handle_without_a_network_says_the_same(tmp_path, offline):
    refused(spec_with(backbone={"preset": "kaggle://keras/resnetv2/keras/resnet_18_imagenet/2"}), tmp_path,
            "$.backbone.preset", r"cannot download the KerasHub preset 'kaggle://keras/resnetv2/keras/"
                                 r"resnet_18_imagenet/2' \(no network\?\).* then copy the folder "
                                 r"keras_resnetv2_keras_resnet_18_imagenet_2/ beside the spec")


def test_the_example_spec_offline_gets_the_same_answer(offline, tmp_path):
    example = os.path.join(os.path.dirname(__file__), "..", "..", "specs", "kerashub_finetune.json")
    with pytest.raises(SpecError, match=r"\$.backbone.preset: cannot download the KerasHub preset "
                                        r"'resnet_18_imagenet' \(no network\?\)"):
        validate(example)


def test_a_folder_that_is_not_a_preset(tmp_path):
    (tmp_path / "empty").mkdir()
    refused(spec_with(backbone={"preset": str(tmp_path / "empty")}), tmp_path, "$.backbone.preset",
            r"empty is not a KerasHub preset folder \(config.json and model.weights.h5")


def test_a_preset_that_is_not_an_image_model(tmp_path):
    from keras_hub.models import BertBackbone

    folder = str(tmp_path / "bert")
    BertBackbone(vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=4, intermediate_dim=4).save_to_preset(folder)
    refused(spec_with(backbone={"preset": folder}), tmp_path, "$.backbone.preset",
            r"bert is a BertBackbone, which takes 3 inputs, not one batch of images")


# --- the same selectors, stages and multipliers on both kinds of backbone ---------


@pytest.mark.parametrize("kind", ["keras.applications", "keras_hub"])
def test_frozen_slow_and_stages_work_alike_on_both_sources(tmp_path, tiny_preset, recorded_fits, kind):
    if kind == "keras_hub":
        backbone, stem, block = {"preset": str(tiny_preset)}, "pool1_pool", "stack0_*"
    else:
        backbone = {"name": "mobilenet_v3_small", "input_shape": [32, 32, 3], "weights": None}
        stem, block = "conv_bn", "expanded_conv_*"
    spec = spec_with(backbone=backbone, data={"builtin": "digits", "image_size": [32, 32]}, stages=[
        {"name": "head", "frozen": [{"regex": "^(?!head_)"}], "slow": [{"match": "head_*", "lr_mult": 10}],
         "solver": {"base_lr": 0.01, "epochs": 1}},
        {"name": "all", "frozen": [{"up_to": stem}],
         "slow": [{"match": "head_*", "lr_mult": 10}, {"match": block, "lr_mult": 0.1}],
         "solver": {"base_lr": 0.001, "epochs": 1}}])
    result = train(spec, run_dir=tmp_path / "run", verbose=0)
    head, everything = recorded_fits
    model = result.model
    assert head["trainable"] == ["head_classifier"]
    names = [layer.name for layer in model.layers]
    stem_end = names.index(stem)
    assert everything["trainable"][-1] == "head_classifier"
    assert not set(everything["trainable"]) & set(names[: stem_end + 1])
    assert any(name.startswith(block[:-1]) for name in everything["trainable"])
    multipliers = everything["config"]["lr_mult"]
    by_layer = {path.split("/")[0]: mult for path, mult in multipliers.items()}
    assert by_layer["head_classifier"] == 10
    assert {mult for layer, mult in by_layer.items() if layer.startswith(block[:-1])} == {0.1}


# --- the model handed back ----------------------------------------------------------


def test_model_keras_and_the_preset_folder_load_where_zoo_is_not_installed(tmp_path, tiny_preset):
    # A KerasHub run, and a registry (small_cnn) run with a step policy.
    hub = train(preset_spec(tiny_preset, head={"classes": 3, "dropout": 0.1},
                            data={"builtin": "digits", "classes": [5, 6, 7], "normalization": "backbone"},
                            slow=[{"match": "head_*", "lr_mult": 10}, {"match": "stack0_*", "lr_mult": 0.1}]),
                run_dir=tmp_path / "hub", verbose=0)
    registry = spec_with(data={"builtin": "digits", "classes": [0, 1]}, head={"classes": 2},
                         slow=[{"match": "head_*", "lr_mult": 10}])
    registry["solver"] = {"base_lr": 0.01, "epochs": 1, "batch_size": 64, "lr_policy": "step", "gamma": 0.5,
                          "stepsize": 2}
    small = train(registry, run_dir=tmp_path / "small", verbose=0)
    preset = tmp_path / "hub" / "preset"
    assert json.loads((preset / "class_names.json").read_text()) == ["5", "6", "7"]
    photos = np.random.default_rng(0).uniform(0, 255, (4, 20, 20, 3)).astype("float32")
    digits = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 1)).astype("float32")
    np.save(tmp_path / "photos.npy", photos)
    np.save(tmp_path / "digits.npy", digits)
    code = """
import sys
sys.modules["zoo"] = sys.modules["callbacks"] = None  # this package is not installed
import json, keras, keras_hub, numpy as np
photos, digits = np.load("photos.npy"), np.load("digits.npy")
classifier = keras_hub.models.ImageClassifier.from_preset("hub/preset")
hub, small = keras.saving.load_model("hub/model.keras"), keras.saving.load_model("small/model.keras")
names = json.load(open("hub/preset/class_names.json"))
print(json.dumps({"task": type(classifier).__name__, "hub_optimizer": type(hub.optimizer).__name__,
                  "preset": classifier.predict(photos, verbose=0).tolist(),
                  "hub": hub.predict(classifier.preprocessor(photos), verbose=0).tolist(),
                  "names": [names[i] for i in classifier.predict(photos, verbose=0).argmax(-1)],
                  "small": small.predict(digits, verbose=0).tolist(), "small_loss": type(small.loss).__name__,
                  "small_optimizer": small.optimizer.get_config()}))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Skipping variable loading" not in run.stderr  # the optimizers' variables are all in the files
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    # The KerasHub run: what its model predicts on the photos, resized and normalized as in training.
    from keras_hub.layers import ImageConverter

    expected = hub.model.predict(ImageConverter.from_preset(str(preset))(photos), verbose=0)
    assert loaded["task"] == "ResNetImageClassifier" and loaded["hub_optimizer"] == "SGD"
    np.testing.assert_allclose(loaded["preset"], expected, atol=1e-5)
    np.testing.assert_allclose(loaded["hub"], expected, atol=1e-5)
    assert loaded["names"] == [["5", "6", "7"][i] for i in expected.argmax(-1)]
    # The registry run, compiled with plain SGD at the LR it ended at: 0.01 halved every 2 steps.
    np.testing.assert_allclose(loaded["small"], small.model.predict(digits, verbose=0), atol=1e-5)
    assert loaded["small_loss"] == "SparseCategoricalCrossentropy"
    steps = len(small.lr_per_step)
    assert steps > 2 and loaded["small_optimizer"]["learning_rate"] == pytest.approx(0.01 * 0.5 ** (steps // 2))
    assert loaded["small_optimizer"]["momentum"] == 0.9


def test_a_head_keras_hub_cannot_hold_gets_model_keras_only(tmp_path, tiny_preset, capsys):
    spec = preset_spec(tiny_preset, head={"classes": 10, "hidden": [8]})
    reason = "the head has hidden layers; ResNetImageClassifier has one Dense layer"
    assert validate(spec).summary().endswith(f"; no KerasHub preset folder: {reason})")
    result = train(spec, run_dir=tmp_path / "run", verbose=1)
    assert result.no_preset == reason
    assert not (tmp_path / "run" / "preset").exists() and (tmp_path / "run" / "model.keras").exists()
    out = capsys.readouterr().out
    told = out.index(f"No KerasHub preset folder will be written: {reason}; model.keras will hold the network.")
    assert told < out.index("Stage 1/1")  # before training, not after


def test_why_a_network_has_no_keras_hub_classifier_form(tmp_path, tiny_preset):
    from keras_hub.models import DINOV2Backbone

    def reason(**changes):
        return validate(preset_spec(tiny_preset, **changes)).no_preset

    assert reason() is None
    assert reason(backbone={"preset": str(tiny_preset), "cut_at": "P2"}) == (
        "the backbone is cut at 'P2'; ResNetImageClassifier takes its whole output")
    assert reason(backbone={"preset": str(tiny_preset), "input_shape": [32, 32, 3]},
                  head={"classes": 10, "pooling": "flatten"}) == "ResNetImageClassifier has no 'flatten' pooling"
    from keras_hub.models import VGGBackbone

    vgg = str(tmp_path / "vgg")
    VGGBackbone(stackwise_num_repeats=[1], stackwise_num_filters=[4], image_shape=(None, None, 3)).save_to_preset(vgg)
    assert validate(preset_spec(vgg, data={"builtin": "digits"})).no_preset == (
        "VGGImageClassifier has a head of its own, not pooling, dropout and one Dense layer")
    folder = str(tmp_path / "dino")
    DINOV2Backbone(patch_size=14, num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=16,
                   image_shape=(28, 28, 3)).save_to_preset(folder)
    assert validate(preset_spec(folder, data={"builtin": "digits"})).no_preset == (
        "KerasHub has no image classifier for DINOV2Backbone")


def test_the_preset_folder_preprocesses_as_the_run_did(tmp_path, tiny_preset):
    # Not the preset's own normalization, and a random crop: the folder's
    # converter resizes to the crop size and rescales by the spec's mean/std.
    spec = preset_spec(tiny_preset, data={"builtin": "digits", "image_size": [36, 36], "classes": [0, 1],
                                          "normalization": {"mean": 0.5, "std": 0.25},
                                          "augment": {"random_crop": [30, 30]}}, head={"classes": 2})
    result = train(spec, run_dir=tmp_path / "run", verbose=0)
    from keras_hub.models import ImageClassifier

    classifier = ImageClassifier.from_preset(str(tmp_path / "run" / "preset"))
    images = np.random.default_rng(1).uniform(0, 255, (3, 50, 40, 3)).astype("float32")
    by_hand = (keras.ops.convert_to_numpy(keras.layers.Resizing(30, 30)(images)) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(classifier.predict(images, verbose=0), result.model.predict(by_hand, verbose=0),
                               atol=1e-5)


def test_mixed_precision_model_keras_and_preset(tmp_path, tiny_preset):
    spec = preset_spec(tiny_preset, mixed_precision="float16", head={"classes": 3},
                       data={"builtin": "digits", "classes": [0, 1, 2], "normalization": "backbone"})
    result = train(spec, run_dir=tmp_path / "run", verbose=0)
    from keras_hub.models import ImageClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # such as "Skipping variable loading for optimizer"
        loaded = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)
    assert loaded.get_layer("conv1_conv").dtype_policy.name == "mixed_float16"
    # The preset is saved in float32 (KerasHub cannot load a mixed-precision one).
    classifier = ImageClassifier.from_preset(str(tmp_path / "run" / "preset"))
    assert classifier.backbone.dtype_policy.name == "float32"
    images = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(classifier.predict(images, verbose=0),
                               result.model.predict(classifier.preprocessor(images), verbose=0), atol=2e-3)


def test_a_kerashub_run_resumes_and_is_overwritten(tmp_path):
    folder = save_tiny_resnet_preset(tmp_path / "tiny", image_size=(16, 16))
    spec = preset_spec(folder, head={"classes": 2},
                       data={"builtin": "digits", "classes": [0, 1], "normalization": "backbone"})
    spec["solver"]["epochs"] = 2

    with pytest.raises(KeyboardInterrupt):
        train(spec, run_dir=tmp_path / "run", callbacks=[stop_after_one_epoch()], verbose=0)
    assert not (tmp_path / "run" / "preset").exists()
    resumed = train(spec, run_dir=tmp_path / "run", resume=True, verbose=0)
    assert resumed.history["epoch"].tolist() == [0, 1]
    first = (tmp_path / "run" / "preset" / "task.weights.h5").read_bytes()
    train({**spec, "seed": 1}, run_dir=tmp_path / "run", overwrite=True, verbose=0)
    assert (tmp_path / "run" / "preset" / "task.weights.h5").read_bytes() != first
    assert not [name for name in os.listdir(tmp_path / "run") if name.startswith(".tmp-")]
