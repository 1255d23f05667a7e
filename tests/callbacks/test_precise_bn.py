"""PreciseBN and recompute_batchnorm: BatchNormalization statistics equal to
numpy's over the data, validation that sees them, frozen layers untouched."""

import gc
import weakref

import keras
import numpy as np
import pytest
from keras import layers, ops

from callbacks import BestWeights, PreciseBN, recompute_batchnorm
from tests.callbacks.helpers import ScriptedMetric

# Keras's per-batch moments on TensorFlow are float32 reductions accurate to
# about 1e-5 relative for a few hundred images; a batch weighted wrongly, or
# a missing between-batch term, errs by more than 1e-3 on the label-sorted data below.
RTOL = 5e-5


@pytest.fixture(scope="module")
def images():
    from zoo.datasets import load_digits

    (x, y), (x_val, y_val) = load_digits(validation_split=0.25, seed=0)
    return x[:1344], y[:1344], x_val, y_val  # 42 batches of 32: no ragged last step in fit


def bn_model(momentum=0.99):
    """input -> Conv2D -> BatchNormalization -> ReLU -> Dropout -> softmax,
    compiled; and the model of the Conv2D's outputs."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    conv = layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(momentum=momentum, name="bn")(conv)
    x = layers.Dropout(0.2)(layers.ReLU()(x))
    outputs = layers.Dense(10, activation="softmax")(layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model, keras.Model(inputs, conv)


def batches_of(x, y, size=192):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def exact_statistics(features, x):
    """numpy's mean and (biased) variance of `features(x)`, per channel, in float64."""
    values = ops.convert_to_numpy(features(x)).astype("float64")
    axes = tuple(range(values.ndim - 1))
    return values.mean(axes), values.var(axes)


def statistics(layer):
    return ops.convert_to_numpy(layer.moving_mean), ops.convert_to_numpy(layer.moving_variance)


def assert_statistics(layer, expected):
    for actual, wanted in zip(statistics(layer), expected):
        np.testing.assert_allclose(actual, wanted, rtol=RTOL, atol=RTOL * np.abs(wanted).max())


def test_the_statistics_are_the_exact_ones_over_batches_of_unequal_size(images):
    x, y = images[0], images[1]
    order = np.argsort(y, kind="stable")  # label-sorted: batches with unlike statistics
    x, y = x[order], y[order]
    model, features = bn_model()
    bn = model.get_layer("bn")
    others = [(v, ops.convert_to_numpy(v)) for v in model.variables
              if v is not bn.moving_mean and v is not bn.moving_variance]
    batches = [x[:192], (x[192:672], y[192:672]), (x[672:864], y[672:864], None), x[864:]]  # x, (x, y), (x, y, w)

    assert recompute_batchnorm(model, batches) == ["bn"]
    assert_statistics(bn, exact_statistics(features, x))
    assert bn.momentum == 0.99
    for variable, before in others:  # weights and Dropout's seed state
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), before, err_msg=variable.path)

    assert recompute_batchnorm(model, batches, num_batches=2) == ["bn"]
    assert_statistics(bn, exact_statistics(features, x[:672]))


def test_an_error_midway_restores_the_momentum_and_the_statistics(images):
    model, _ = bn_model()
    bn = model.get_layer("bn")
    before = statistics(bn)

    def failing_batches():
        yield images[0][:32]  # a pass that changes the statistics...
        raise RuntimeError("the input pipeline failed")  # ...then an error

    with pytest.raises(RuntimeError, match="the input pipeline failed"):
        recompute_batchnorm(model, failing_batches())
    assert bn.momentum == 0.99
    for actual, expected in zip(statistics(bn), before):
        np.testing.assert_array_equal(actual, expected)
    with pytest.raises(ValueError, match="No batch to recompute"):
        recompute_batchnorm(model, [])


class StatisticsBeforeValidation(keras.callbacks.Callback):
    """Keeps the statistics that validation would use without PreciseBN (list it first)."""

    def on_test_begin(self, logs=None):
        self.statistics = statistics(self.model.get_layer("bn"))


def test_validation_sees_the_exact_statistics(images):
    # The acceptance check: after it runs, validation accuracy equals
    # the accuracy computed with exact full-data statistics. Digits on a gray
    # background (+2): the Conv2D's outputs have means far from the initial
    # moving_mean of 0, which 42 steps at momentum 0.99 go only a third of the way to.
    x, y, x_val, y_val = (images[0] + 2, images[1], images[2] + 2, images[3])
    model, features = bn_model(momentum=0.99)
    stale = StatisticsBeforeValidation()
    history = model.fit(x, y, batch_size=32, epochs=1, validation_data=(x_val, y_val), verbose=0,
                        callbacks=[stale, PreciseBN(batches_of(x, y), num_batches=None)])

    def accuracy(mean, variance):
        model.get_layer("bn").moving_mean.assign(mean)
        model.get_layer("bn").moving_variance.assign(variance)
        return model.evaluate(x_val, y_val, verbose=0, return_dict=True)["accuracy"]

    exact_accuracy = accuracy(*exact_statistics(features, x))
    assert history.history["val_accuracy"] == [pytest.approx(exact_accuracy, abs=1e-6)]
    assert accuracy(*stale.statistics) < exact_accuracy - 0.2


def test_at_train_end_it_recomputes_the_weights_that_best_weights_restored(images, capsys):
    x, y, x_val, y_val = images
    model, features = bn_model()
    # The best score is epoch 1's: BestWeights restores those weights, with their stale statistics.
    callbacks = [ScriptedMetric([0.9, 0.5, 0.5]), BestWeights("score", mode="max", verbose=0),
                 PreciseBN(batches_of(x, y), num_batches=None, when="train_end", verbose=1)]
    model.fit(x, y, batch_size=32, epochs=3, callbacks=callbacks, verbose=0)
    assert_statistics(model.get_layer("bn"), exact_statistics(features, x))
    assert capsys.readouterr().out.strip() == \
        "PreciseBN: recomputed the statistics of 1 BatchNormalization layer over 7 batches."


class InferenceModeStem(keras.Model):
    """Conv2D -> BatchNormalization, the latter always called in inference mode."""

    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2D(8, 3, padding="same")
        self.bn = layers.BatchNormalization(momentum=0.9, name="stem_bn")

    def call(self, x):
        return self.bn(self.conv(x), training=False)


def test_layers_in_inference_mode_are_left_exactly_as_they_were(images):
    x = images[0]
    keras.utils.set_random_seed(0)
    stem = InferenceModeStem()
    inputs = keras.Input((8, 8, 1))
    conv = layers.Conv2D(8, 3, padding="same")(stem(inputs))
    bn = layers.BatchNormalization(name="bn")
    frozen = layers.BatchNormalization(momentum=0.95, name="frozen_bn")
    frozen.trainable = False
    outputs = layers.Dense(10)(layers.GlobalAveragePooling2D()(frozen(bn(conv))))
    model = keras.Model(inputs, outputs)
    fixed = [stem.bn, frozen]
    rng = np.random.default_rng(0)
    for layer in fixed:  # statistics that a training-mode pass would change
        layer.moving_mean.assign(rng.normal(size=8).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=8).astype("float32"))
    before = [statistics(layer) for layer in fixed]

    assert recompute_batchnorm(model, [x[:672], x[672:]]) == ["bn"]
    assert_statistics(bn, exact_statistics(keras.Model(inputs, conv), x))  # after stem_bn in inference mode
    for layer, expected in zip(fixed, before):
        for actual, wanted in zip(statistics(layer), expected):
            np.testing.assert_array_equal(actual, wanted)
    assert [layer.momentum for layer in (*fixed, bn)] == [0.9, 0.95, 0.99]


def test_nothing_retraces_across_calls_and_fits_and_the_model_is_freed(images):
    x, y = images[0], images[1]
    traces = []

    class CountingReLU(layers.ReLU):
        # Its Python body runs once a trace (and at every eager call).
        def call(self, inputs):
            traces.append(1)
            return super().call(inputs)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    conv = layers.Conv2D(4, 3)(inputs)
    bn = layers.BatchNormalization()
    hidden = CountingReLU()(bn(conv))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Flatten()(hidden)))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    data = batches_of(x, y, 448)

    # Without validation: PreciseBN recomputes at the epoch's end.
    model.fit(x, y, batch_size=448, verbose=0, callbacks=[PreciseBN(data, num_batches=None)])  # traces
    traced = len(traces)
    assert_statistics(bn, exact_statistics(keras.Model(inputs, conv), x))
    model.fit(x, y, batch_size=448, verbose=0, callbacks=[PreciseBN(data, num_batches=None)])
    recompute_batchnorm(model, data)
    assert len(traces) == traced
    reference = weakref.ref(model)
    del model
    gc.collect()
    assert reference() is None


def test_a_layer_unfrozen_since_the_last_recompute_is_recomputed(images):
    # A stage that unfreezes a trunk changes what a compiled pass does.
    x, y = images[0], images[1]
    model, features = bn_model()
    bn = model.get_layer("bn")
    bn.trainable = False
    assert recompute_batchnorm(model, batches_of(x, y)) == []
    bn.trainable = True
    assert recompute_batchnorm(model, batches_of(x, y)) == ["bn"]
    assert_statistics(bn, exact_statistics(features, x))


def test_bad_arguments_and_config_round_trip(images):
    data = batches_of(images[0], images[1])
    with pytest.raises(ValueError, match=r"`num_batches` must be an integer >= 1. Received: num_batches=0"):
        PreciseBN(data, num_batches=0)
    with pytest.raises(ValueError, match=r"`when` must be one of epoch, train_end. .*did you mean 'epoch'"):
        PreciseBN(data, when="epochs")
    array = r"Received: data=<ndarray of shape \(1344, 8, 8, 1\)>"
    with pytest.raises(ValueError, match=r"`data` must be an iterable of batches .* " + array):
        PreciseBN(images[0])  # one batch, not an iterable of them
    precise = PreciseBN(data, num_batches=None, when="train_end", verbose=1)
    assert precise.get_config() == {"num_batches": None, "when": "train_end", "verbose": 1}
    assert PreciseBN(data, **precise.get_config()).get_config() == precise.get_config()
