import json

import keras
import numpy as np
import pytest
from keras import ops

from zoo.backbones import build_trunk
from zoo.model import build_network, configure_layers, filler
from zoo.optimizers import make_optimizer
from zoo.sections import Filler, Selector, SlowGroup, from_dict
from zoo.spec import load_spec


def network(**changes):
    base = {
        "backbone": {"name": "small_cnn"},
        "head": {"classes": 3, "hidden": [8]},
        "solver": {"base_lr": 0.01, "epochs": 1},
        "data": {"builtin": "digits"},
    }
    base.update(changes)
    spec = load_spec(base)
    return build_network(build_trunk(spec.backbone), spec.head, spec.name)


def selectors(*groups, cls=Selector):
    return [from_dict(cls, group) for group in groups]


def layer_names(model, trainable):
    return [l.name for l in model.layers if l.trainable == trainable and l.weights]


@pytest.mark.parametrize(
    "config, std",
    [
        ({"type": "gaussian", "std": 0.05}, 0.05),
        ({"type": "xavier"}, np.sqrt(1 / 400)),  # Caffe: variance 1 / fan_in
        ({"type": "msra"}, np.sqrt(2 / 400)),
        ({"type": "msra", "variance_norm": "average"}, np.sqrt(2 / 300)),
    ],
)
def test_caffe_fillers_have_caffes_variance(config, std):
    values = ops.convert_to_numpy(filler(from_dict(Filler, config))((400, 200)))
    assert values.std() == pytest.approx(std, rel=0.03)
    assert abs(values.mean()) < std / 10


def test_constant_and_uniform_fillers():
    assert np.all(ops.convert_to_numpy(filler(Filler("constant", value=0.1))((3,))) == np.float32(0.1))
    values = ops.convert_to_numpy(filler(Filler("uniform", min=-2, max=-1))((1000,)))
    assert values.min() >= -2 and values.max() <= -1


@pytest.mark.parametrize("pooling, features", [("avg", 64), ("max", 64), ("flatten", 4 * 4 * 64)])
def test_head_pooling(pooling, features):
    model = network(head={"classes": 3, "pooling": pooling})
    assert model.get_layer("head_pool").output.shape == (None, features)
    assert model.get_layer("head_classifier").kernel.shape == (features, 3)


def test_head_layers_and_initializers():
    model = network(head={"classes": 3, "hidden": [8], "dropout": 0.5,
                          "bias_filler": {"type": "constant", "value": 0.2}})
    head = [l.name for l in model.layers if l.name.startswith("head_")]
    assert head == ["head_pool", "head_hidden1", "head_dropout", "head_classifier"]
    np.testing.assert_allclose(ops.convert_to_numpy(model.get_layer("head_classifier").bias), 0.2)


@pytest.mark.parametrize(
    "selector, frozen",
    [
        ({"match": "conv*"}, ["conv1", "conv2", "conv3"]),
        ({"regex": "^bn[12]$"}, ["bn1", "bn2"]),
        ({"up_to": "bn2"}, ["conv1", "bn1", "conv2", "bn2"]),
        ({"indices": [1, 3]}, ["conv1", "bn1"]),
    ],
)
def test_freezing_by_every_selector(selector, frozen):
    model = network()
    table, _, _ = configure_layers(model, selectors(selector), [])
    assert layer_names(model, trainable=False) == frozen
    assert table.set_index("group").loc["frozen", "trainable_params"] == 0


def test_frozen_batch_norm_runs_in_inference_mode():
    model = network()
    x = [np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")]
    configure_layers(model, selectors({"match": "bn*"}), [])
    np.testing.assert_allclose(ops.convert_to_numpy(model(x, training=True)),
                               ops.convert_to_numpy(model(x, training=False)), atol=1e-6)
    configure_layers(model, [], [])  # trainable again: batch statistics in training
    assert not np.allclose(ops.convert_to_numpy(model(x, training=True)),
                           ops.convert_to_numpy(model(x, training=False)), atol=1e-3)


def test_the_most_specific_slow_group_wins_and_lr_mult_zero_freezes():
    model = network()
    slow = selectors({"match": "*", "lr_mult": 0.1}, {"match": "head_*", "lr_mult": 10, "decay_mult": 0},
                     {"match": "head_classifier", "lr_mult": 20}, {"regex": "conv1", "lr_mult": 0}, cls=SlowGroup)
    table, lr_mult, decay_mult = configure_layers(model, [], slow)
    kernel = model.get_layer("head_classifier").kernel.path
    hidden = model.get_layer("head_hidden1").kernel.path
    assert lr_mult[kernel] == 20 and lr_mult[hidden] == 10 and decay_mult[hidden] == 0
    assert lr_mult[model.get_layer("conv2").kernel.path] == 0.1
    assert not model.get_layer("conv1").trainable
    groups = table.set_index("group")
    assert groups.loc["match head_classifier", "trainable_params"] == 8 * 3 + 3
    assert list(table.columns) == ["group", "lr_mult", "decay_mult", "layers", "trainable_params"]


def one_step(optimizer_name, lr, lr_mult=1.0, decay_mult=1.0, weight_decay=0.0,
             regularization_type="L2", steps=1, train_a=True, **options):
    """Weights of layers b (with the multipliers) and a (without) of a
    2-layer model after `steps` steps on fixed data."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"),
                              keras.layers.Dense(2, name="b")])
    model.get_layer("a").trainable = train_a
    paths = [w.path for w in model.get_layer("b").trainable_weights]
    optimizer = make_optimizer(optimizer_name, lr, lr_mult={p: lr_mult for p in paths},
                               decay_mult={p: decay_mult for p in paths}, weight_decay=weight_decay,
                               regularization_type=regularization_type, **options)
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(1).random((8, 4)).astype("float32")
    y = np.random.default_rng(2).random((8, 2)).astype("float32")
    for _ in range(steps):
        model.train_on_batch(x, y)
    return [ops.convert_to_numpy(w) for w in model.get_layer("b").weights], \
        [ops.convert_to_numpy(w) for w in model.get_layer("a").weights]


@pytest.mark.parametrize(
    "name, options",
    [("sgd", {"momentum": 0.0}), ("sgd", {"momentum": 0.9}), ("adam", {}), ("adamw", {}),
     ("rmsprop", {})],
)
def test_lr_mult_equals_an_optimizer_at_lr_times_mult_for_that_layer(name, options):
    # One step: b moves as under lr * 10, a as under lr.
    scaled_b, other_a = one_step(name, 0.01, lr_mult=10.0, **options)
    reference_b, _ = one_step(name, 0.1, **options)
    _, reference_a = one_step(name, 0.01, **options)
    for actual, expected in zip(scaled_b + other_a, reference_b + reference_a):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
    # Five steps with a frozen (b's gradients then depend on b alone): the
    # optimizer state (momentum, Adam's moments) evolves as under lr * 10 too.
    scaled_b, _ = one_step(name, 0.01, lr_mult=10.0, steps=5, train_a=False, **options)
    reference_b, _ = one_step(name, 0.1, steps=5, train_a=False, **options)
    for actual, expected in zip(scaled_b, reference_b):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
    # Scaling the gradient instead is not the same under Adam and RMSprop.
    if name in ("adam", "adamw", "rmsprop"):
        plain_b, _ = one_step(name, 0.01, steps=5, train_a=False, **options)
        assert not np.allclose(plain_b[0], reference_b[0])


@pytest.mark.parametrize("kind", ["L2", "L1"])
def test_decay_mult_scales_caffe_weight_decay(kind):
    # One SGD step: w1 = w0 - lr * (grad + wd * decay_mult * penalty(w0)).
    plain, _ = one_step("sgd", 0.1, momentum=0.0)
    decayed, _ = one_step("sgd", 0.1, momentum=0.0, weight_decay=0.01, decay_mult=3.0,
                          regularization_type=kind)
    keras.utils.set_random_seed(0)
    initial = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    w0 = [ops.convert_to_numpy(w) for w in initial.layers[1].weights]
    for before, without, with_decay in zip(w0, plain, decayed):
        penalty = before if kind == "L2" else np.sign(before)
        np.testing.assert_allclose(with_decay, without - 0.1 * 0.01 * 3.0 * penalty, rtol=1e-5, atol=1e-7)


def test_adamw_decoupled_decay_is_scaled_by_lr_mult_times_decay_mult():
    # AdamW decays before its Adam step: w' = w - lr * lr_mult * wd * decay_mult * w.
    plain, _ = one_step("adamw", 0.01, lr_mult=2.0)
    decayed, _ = one_step("adamw", 0.01, lr_mult=2.0, weight_decay=0.1, decay_mult=3.0)
    keras.utils.set_random_seed(0)
    initial = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    w0 = [ops.convert_to_numpy(w) for w in initial.layers[1].weights]
    for before, without, with_decay in zip(w0, plain, decayed):
        np.testing.assert_allclose(with_decay, without - 0.01 * 2.0 * 0.1 * 3.0 * before, rtol=1e-5, atol=1e-6)


def test_backbone_from_a_weights_file_and_from_a_cut_keras_model(tmp_path):
    source = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    source.save_weights(tmp_path / "mnv3.weights.h5")
    built = network(backbone={"name": "mobilenet_v3_small", "input_shape": [32, 32, 3],
                              "weights": str(tmp_path / "mnv3.weights.h5")})
    by_path = {w.path: ops.convert_to_numpy(w) for w in built.weights}
    for weight in source.weights:
        np.testing.assert_array_equal(by_path[weight.path], ops.convert_to_numpy(weight))

    saved = network()
    saved.save(tmp_path / "small.keras")
    cut = network(backbone={"model": str(tmp_path / "small.keras"), "cut_at": "relu2"})
    assert "conv3" not in [l.name for l in cut.layers]
    np.testing.assert_array_equal(ops.convert_to_numpy(cut.get_layer("conv2").kernel),
                                  ops.convert_to_numpy(saved.get_layer("conv2").kernel))


def test_every_hidden_activation_the_schema_allows_is_a_keras_activation():
    from zoo.spec import schema_text

    names = json.loads(schema_text())["properties"]["head"]["properties"]["hidden_activation"]["enum"]
    assert all(callable(keras.activations.get(name)) for name in names)
