"""A spec's `batchnorm` section: modes, momentum, recomputed statistics, and
stages that unfreeze a BatchNorm trunk without collapsing."""

import keras
import numpy as np
import pytest

from callbacks import recompute_batchnorm
from zoo.errors import SpecError
from zoo.runner import Runner
from zoo.spec import load_spec
from zoo.train import train


def pretrained(spec_dir):
    """The digits 0-4 small CNN of the README's first command, cut below its head."""
    return {"model": str(spec_dir / ".." / "runs" / "digits_pretrain" / "model.keras"), "cut_at": "relu3"}


def finetune_spec(spec_dir, **fields):
    return {"name": "bn", "seed": 0, "backbone": pretrained(spec_dir), "head": {"classes": 5},
            "solver": {"base_lr": 0.05, "momentum": 0.9, "batch_size": 32, "epochs": 1},
            "data": {"builtin": "digits", "classes": [5, 6, 7, 8, 9]}, **fields}


def statistics(layer):
    return [keras.ops.convert_to_numpy(w).copy() for w in (layer.moving_mean, layer.moving_variance)]


def values(layer, name):
    return keras.ops.convert_to_numpy(getattr(layer, name)).copy()


def test_the_default_mode_is_inference_for_a_pretrained_trunk_and_train_from_scratch(spec_dir):
    runner = Runner(load_spec(finetune_spec(spec_dir)))
    runner.build()
    assert runner.batchnorm_modes == {name: ("inference", None) for name in ("bn1", "bn2", "bn3")}
    scratch = Runner(load_spec({**finetune_spec(spec_dir), "backbone": {"name": "small_cnn"}}))
    scratch.build()
    assert set(scratch.batchnorm_modes.values()) == {("train", None)}


def test_every_source_says_whether_its_trunk_is_pretrained(spec_dir, tmp_path, tiny_preset):
    from zoo.backbones import build_trunk, get_backbone
    from zoo.sections import Backbone

    get_backbone("small_cnn").build(input_shape=(8, 8, 1)).save_weights(tmp_path / "small.weights.h5")
    pretrained_by_source = {
        "registry, no weights": ({"name": "small_cnn", "input_shape": (8, 8, 1)}, False),
        "registry, a weights file": ({"name": "small_cnn", "input_shape": (8, 8, 1),
                                      "weights": str(tmp_path / "small.weights.h5")}, True),
        "saved model": (pretrained(spec_dir), True),
        "preset": ({"preset": str(tiny_preset)}, True),
    }
    for source, (backbone, expected) in pretrained_by_source.items():
        assert build_trunk(Backbone(**backbone)).pretrained is expected, source


def test_each_mode_and_momentum_acts_in_training(spec_dir, tmp_path):
    spec = finetune_spec(spec_dir, batchnorm={
        "mode": "inference",
        "layers": [{"match": "bn1", "mode": "frozen"}, {"match": "bn3", "mode": "train", "momentum": 0.5}]})
    runner = Runner(load_spec(spec))
    model = runner.build()
    bn = {name: model.get_layer(name) for name in ("bn1", "bn2", "bn3")}
    before = {name: statistics(layer) for name, layer in bn.items()}
    gamma = {name: values(layer, "gamma") for name, layer in bn.items()}
    assert bn["bn3"].momentum == 0.5 and bn["bn2"].momentum == 0.9  # small_cnn's own
    assert "frozen" in runner.enter_stage(0)["group"].tolist()
    runner.run(verbose=0)

    def moved(name):
        return [not np.array_equal(a, b) for a, b in zip(before[name], statistics(bn[name]))]

    assert moved("bn1") == [False, False] and np.array_equal(gamma["bn1"], values(bn["bn1"], "gamma"))
    assert moved("bn2") == [False, False] and not np.array_equal(gamma["bn2"], values(bn["bn2"], "gamma"))
    assert moved("bn3") == [True, True]


def test_a_later_stage_gets_the_layers_own_momentum_back(spec_dir):
    spec = finetune_spec(spec_dir, stages=[{"name": "a", "batchnorm": {"momentum": 0.5}}, {"name": "b"}])
    runner = Runner(load_spec(spec))
    model = runner.build()
    assert model.get_layer("bn1").momentum == 0.5
    runner.enter_stage(1)
    assert model.get_layer("bn1").momentum == 0.9


def two_stages(spec_dir, mode):
    """Head first on the frozen trunk, then everything: the stage change
    the issue saw collapse (BN momentum 0.99, as Keras's default)."""
    return finetune_spec(spec_dir, name=f"stages-{mode}", batchnorm={"mode": mode, "momentum": 0.99}, stages=[
        {"name": "head", "frozen": [{"up_to": "relu3"}], "solver": {"epochs": 2}},
        {"name": "all", "slow": [{"match": "head_*", "lr_mult": 10}, {"match": "*", "lr_mult": 0.1}],
         "solver": {"epochs": 1}}])


def test_unfreezing_a_batchnorm_trunk_keeps_validation_accuracy(spec_dir, tmp_path):
    kept = train(two_stages(spec_dir, "inference"), run_dir=tmp_path / "inference", verbose=0).history
    before, after = kept["val_accuracy"].iloc[1], kept["val_accuracy"].iloc[2]
    assert after >= before - 0.03, kept
    # Keras's default, batch statistics once the trunk trains: the drop the
    # test above guards against.
    switched = train(two_stages(spec_dir, "train"), run_dir=tmp_path / "train", verbose=0).history
    assert switched["val_accuracy"].iloc[2] < switched["val_accuracy"].iloc[1] - 0.2, switched


@pytest.mark.parametrize("when", [True, "epoch"])
def test_recomputed_statistics_are_those_of_the_stages_batches(spec_dir, tmp_path, when):
    spec = finetune_spec(spec_dir, batchnorm={"mode": "train", "momentum": 0.99, "recompute": when,
                                              "recompute_batches": 10})
    result = train(spec, run_dir=tmp_path / "run", verbose=0)
    bn3 = result.model.get_layer("bn3")
    recomputed = statistics(bn3)
    runner = Runner(load_spec(spec))
    runner.build()
    # The same batches again: the statistics of the trained weights do not change.
    recompute_batchnorm(result.model, runner.data.train(32, 0, 1), num_batches=10)
    for a, b in zip(recomputed, statistics(bn3)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # And the logged validation of the (one) epoch saw them.
    x, y = (np.concatenate(part) for part in zip(*runner.data.validation(32)))
    accuracy = np.mean(np.argmax(result.model.predict(x, verbose=0), axis=1) == y)
    if when == "epoch":
        assert result.history["val_accuracy"].iloc[-1] == pytest.approx(accuracy, abs=1e-6)
    # The best weights kept on disk hold them; model.keras too, with the layers' own momentum.
    saved = keras.saving.load_model(result.paths["model.keras"])
    best = keras.models.clone_model(result.model)
    best.load_weights(result.paths["best.weights.h5"])
    for model in (saved, best):
        for a, b in zip(recomputed, statistics(model.get_layer("bn3"))):
            np.testing.assert_array_equal(a, b)
    assert saved.get_layer("bn3").momentum == 0.9  # small_cnn's own, not the stage's 0.99


def test_a_recompute_at_the_end_of_a_stage_stays_in_the_best_weights_of_later_stages(spec_dir, tmp_path):
    # Stage 2 trains nothing that matters (LR 1e-12, BatchNorm frozen): the run ends on stage 1's best weights.
    spec = finetune_spec(spec_dir, stages=[
        {"name": "a", "batchnorm": {"mode": "train", "momentum": 0.99, "recompute": True}},
        {"name": "b", "solver": {"base_lr": 1e-12}, "batchnorm": {"mode": "frozen"}}])
    spec["solver"]["early_stopping"] = {"monitor": "val_accuracy", "min_delta": 1.0}  # no later epoch is better
    result = train(spec, run_dir=tmp_path / "run", verbose=0)
    assert result.best_epoch == 0
    runner = Runner(load_spec(spec))
    runner.build()
    # Stage 1's best weights, their statistics recomputed over its batches: again, nothing changes.
    bn3 = result.model.get_layer("bn3")
    kept = statistics(bn3)
    for name in ("bn1", "bn2", "bn3"):  # in train mode, as stage 1 recomputed them
        result.model.get_layer(name).trainable = True
    recompute_batchnorm(result.model, runner.data.train(32, 0, 1))
    for a, b in zip(kept, statistics(bn3)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batchnorm_selectors_and_settings_are_checked_before_training(spec_dir, tmp_path):
    spec = finetune_spec(spec_dir, batchnorm={"layers": [{"match": "conv*", "mode": "frozen"}]})
    with pytest.raises(SpecError) as error:
        Runner(load_spec(spec)).build()
    assert error.value.errors == [("$.batchnorm.layers[0].match",
                                   "'conv*' matches no BatchNormalization layer; the model's are bn1, bn2, "
                                   "bn3")]
    inputs = keras.Input((8, 8, 1))
    plain = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    plain.save(tmp_path / "plain.keras")
    spec = finetune_spec(spec_dir, backbone={"model": str(tmp_path / "plain.keras"), "cut_at": "conv"},
                         batchnorm={"recompute": True})
    with pytest.raises(SpecError) as error:
        Runner(load_spec(spec)).build()
    assert error.value.errors == [("$.batchnorm.recompute", "the model has no BatchNormalization layer: remove it")]
    spec = finetune_spec(spec_dir, batchnorm={"recompute": "epoch"})  # inference mode, the default here
    with pytest.raises(SpecError) as error:
        Runner(load_spec(spec)).build()
    assert error.value.errors[0][0] == "$.batchnorm.recompute"
    assert "this stage has none" in error.value.errors[0][1]
