"""Canaries: the private Keras API that zoo and callbacks rely on.

Each test checks that one internal still exists and behaves as relied on, so
that a Keras upgrade fails here, with a message naming the internal, rather
than somewhere deep in a training run. The Keras range these pass on is
declared in setup.cfg. They run on TensorFlow and on JAX.
"""

import keras
import numpy as np
import pytest
from keras import ops

from zoo.optimizers import make_optimizer


def small_model(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")])
    model.compile(optimizer=optimizer, loss="mse")
    return model


X = np.ones((8, 3), "float32")
Y = np.zeros((8, 2), "float32")


class Zero(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return ops.zeros((), "float32")


def test_optimizer_learning_rate_attribute_holds_the_schedule_and_can_be_swapped():
    # callbacks/_lr_control.py swaps `optimizer._learning_rate` for the length
    # of a fit (the public setter would untrack the LR variable).
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    model = small_model(optimizer)
    model.train_on_batch(X, Y)
    assert hasattr(optimizer, "_learning_rate"), "Keras optimizers no longer have `_learning_rate`"
    count = len(optimizer.variables)
    optimizer._learning_rate = Zero()
    assert float(ops.convert_to_numpy(optimizer.learning_rate)) == 0.0, \
        "`optimizer.learning_rate` no longer reads `optimizer._learning_rate`"
    assert len(optimizer.variables) == count


def test_make_train_function_force_retraces_with_the_swapped_learning_rate():
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    model = small_model(optimizer)
    model.train_on_batch(X, Y)
    optimizer._learning_rate = Zero()
    model.make_train_function(force=True)
    before = [ops.convert_to_numpy(w) for w in model.weights]
    model.train_on_batch(X, Y)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, ops.convert_to_numpy(b),
                                      err_msg="make_train_function(force=True) kept the old learning rate")


def test_get_variable_index_maps_update_step_variables_to_trainable_variables():
    # zoo/optimizers.py finds each variable's lr_mult by path this way.
    seen = []

    class Recording(keras.optimizers.SGD):
        def update_step(self, gradient, variable, learning_rate):
            seen.append(self._trainable_variables[self._get_variable_index(variable)].path)
            super().update_step(gradient, variable, learning_rate)

    model = small_model(Recording(learning_rate=0.1))
    model.train_on_batch(X, Y)
    assert sorted(seen) == sorted(v.path for v in model.trainable_variables)


def test_apply_weight_decay_is_called_with_the_variables_and_use_weight_decay_filters():
    # zoo/optimizers.py overrides `_apply_weight_decay` to scale AdamW's decay per variable.
    calls = []

    class Recording(keras.optimizers.AdamW):
        def _apply_weight_decay(self, variables):
            calls.append([self._use_weight_decay(v) for v in variables])
            super()._apply_weight_decay(variables)

    optimizer = Recording(learning_rate=0.1, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    model = small_model(optimizer)
    model.train_on_batch(X, Y)
    # Called once per trace (TensorFlow may trace the step more than once).
    assert calls, "AdamW no longer decays through `_apply_weight_decay`"
    assert all(call == [True, False, True, False] for call in calls)  # kernels decay, biases do not


def test_layerwise_adamw_decays_through_the_override():
    # decay_mult 0 spares layer a only if the override does the decaying: were
    # `_apply_weight_decay` renamed, AdamW's own decay would reach a too.
    def trained(weight_decay):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")])
        spared = {w.path: 0.0 for w in model.get_layer("a").weights}
        model.compile(optimizer=make_optimizer("adamw", 0.1, decay_mult=spared, weight_decay=weight_decay), loss="mse")
        model.train_on_batch(X, Y)
        return [ops.convert_to_numpy(model.get_layer(name).kernel) for name in ("a", "b")]

    (plain_a, plain_b), (decayed_a, decayed_b) = trained(0.0), trained(0.5)
    np.testing.assert_array_equal(decayed_a, plain_a)
    assert not np.allclose(decayed_b, plain_b)


def test_save_weights_holds_the_optimizer_state_that_resume_relies_on(tmp_path):
    # zoo/checkpoint.py keeps the optimizer's slots and iteration in the
    # `save_weights` file, and Dropout's seed states beside it.
    model = small_model(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    model.train_on_batch(X, Y)
    model.save_weights(tmp_path / "w.weights.h5")
    fresh = small_model(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(tmp_path / "w.weights.h5")
    assert int(ops.convert_to_numpy(fresh.optimizer.iterations)) == 1
    for a, b in zip(model.optimizer.variables, fresh.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))


def test_seed_generator_states_are_model_variables_but_not_weights():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.5)])
    saved = {id(v) for v in model.weights}
    extra = [v for v in model.variables if id(v) not in saved]
    assert len(extra) == 1 and "seed_generator" in extra[0].path


def test_fit_runs_the_train_function_assigned_to_the_model():
    # callbacks/_lr_control.py keeps each LR shape's compiled step and puts
    # it back in `model.train_function`; fit must run it, not rebuild.
    model = small_model(keras.optimizers.SGD(learning_rate=0.1))
    calls = []
    model.make_train_function()
    built = model.train_function

    def counting(*args, **kwargs):
        calls.append(1)
        return built(*args, **kwargs)

    model.train_function = counting
    model.fit(X, Y, batch_size=8, epochs=2, verbose=0)
    assert model.train_function is counting and len(calls) == 2, "fit rebuilt an assigned train function"


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX only: its step is jitted when it is built")
def test_jax_make_train_function_jits_model_train_step_as_found_when_it_builds():
    # callbacks/_lr_control.py gives each build its own function this way:
    # JAX shares compiled steps among live jit wrappers of equal functions.
    model = small_model(keras.optimizers.SGD(learning_rate=0.1))
    calls = []

    def own_step(*args):
        calls.append(1)
        return type(model).train_step(model, *args)

    model.train_step = own_step
    model.make_train_function(force=True)
    del model.train_step
    model.train_on_batch(X, Y)
    assert calls, "make_train_function no longer jits `model.train_step` as found when it builds"


BN_X = np.arange(32, dtype="float32").reshape(8, 4)


def batchnorm_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(1)(keras.layers.BatchNormalization(name="bn")(inputs, training=False))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_a_functional_graph_overrides_training_false_at_a_layers_call_site():
    # Why zoo/batchnorm.py replaces a layer's `call` for "inference" mode:
    # `fit` trains the statistics of a layer called with `training=False`.
    # When this fails, Keras honours the call site again: the replacement
    # could go, and the comment there must change.
    model = batchnorm_model()
    model.train_on_batch(BN_X, Y[:, :1])
    assert np.any(ops.convert_to_numpy(model.get_layer("bn").moving_mean) != 0)


def test_fit_runs_a_layers_own_call_attribute():
    # zoo/batchnorm.py sets an instance's `call` to run a BatchNormalization
    # layer in inference mode while its gamma and beta train.
    from zoo.batchnorm import set_modes

    model = batchnorm_model()
    bn = model.get_layer("bn")
    set_modes(model, {"bn": ("inference", None)})
    model.train_on_batch(BN_X, Y[:, :1])
    np.testing.assert_array_equal(ops.convert_to_numpy(bn.moving_mean), np.zeros(4),
                                  err_msg="Keras no longer calls a layer's own `call` attribute")
    assert np.any(ops.convert_to_numpy(bn.beta) != 0), "gamma and beta must still train"
    set_modes(model, {"bn": ("train", None)})
    assert "call" not in vars(bn)
    model.compile(optimizer="sgd", loss="mse")  # as every stage does: a new train function
    model.train_on_batch(BN_X, Y[:, :1])
    assert np.any(ops.convert_to_numpy(bn.moving_mean) != 0)
