"""Precise BatchNorm: running statistics recomputed with the weights fixed."""

import collections.abc
import itertools
import weakref

import keras
from keras import ops

from callbacks._training_state import seed_states
from zoo.lr_policies import integer, one_of

WHEN = ("epoch", "train_end")

# model -> (signature, its compiled `_forward_step`): `_compiled`.
_COMPILED_STEPS = weakref.WeakKeyDictionary()


class PreciseBN(keras.callbacks.Callback):
    """Recompute the BatchNormalization statistics before evaluation.

    A `BatchNormalization` layer normalizes in inference mode with running
    averages of its inputs' mean and variance (`moving_mean`,
    `moving_variance`, updated with `momentum` 0.99 by default). After a
    short fine-tuning they still mostly describe the weights of hundreds of
    steps ago, and validation suffers. This callback (the PreciseBN of
    Detectron2 and fvcore) replaces them with the exact statistics of the
    current weights over `num_batches` batches of `data`, and changes
    nothing else: see `recompute_batchnorm`.

    With `when="epoch"` it recomputes once an epoch, when validation begins
    (`on_test_begin`), so that the epoch's `val_` metrics and the callbacks
    that read them (`BestWeights`, `ModelCheckpoint`, `EarlyStopping`) see
    the new statistics. In an epoch without validation (no validation data,
    or one that `validation_freq` skips) it recomputes in `on_epoch_end`:
    list it before the callbacks that save the model there. With
    `when="train_end"` it recomputes once, in `on_train_end`, after the
    callbacks listed before it: list it after `BestWeights`, which restores
    the best epoch's weights in its own `on_train_end`.

    A recompute costs `num_batches` forward passes, about as much as a
    third as many training steps.

    Example:

    ```python
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1000).batch(64)
    model.fit(train, validation_data=(x_val, y_val), epochs=5,
              callbacks=[PreciseBN(train, num_batches=100), BestWeights("val_accuracy")])
    ```

    Args:
        data: An iterable of batches: of `x`, or of `(x, y)` or
            `(x, y, sample_weight)` tuples (a `tf.data.Dataset`, a
            `keras.utils.PyDataset`, a list). Each recompute iterates it
            anew; a generator is consumed, each recompute continuing where
            the last one stopped (make it endless).
        num_batches: Integer >= 1, or `None`. The batches used, from the
            start of `data`; `None` uses all of them. Defaults to `100`.
        when: String. `"epoch"` recomputes before every validation (or at
            the end of an epoch without one), `"train_end"` once, when
            training ends. Defaults to `"epoch"`.
        verbose: Integer. 1 prints one line per recompute. Defaults to `0`.
    """

    def __init__(self, data, num_batches=100, when="epoch", verbose=0):
        super().__init__()
        self.data = _check_batches("data", data)
        self.num_batches = None if num_batches is None else integer("num_batches", num_batches, 1)
        self.when = one_of("when", when, WHEN)
        self.verbose = verbose
        self._pending_epoch = None  # the epoch not yet recomputed, when="epoch"

    def on_train_begin(self, logs=None):
        self._pending_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.when == "epoch":
            self._pending_epoch = epoch

    def on_test_begin(self, logs=None):
        # Validation begins; outside `fit` (a lone `evaluate`) no epoch is pending.
        self._recompute_pending_epoch()

    def on_epoch_end(self, epoch, logs=None):
        self._recompute_pending_epoch()

    def on_train_end(self, logs=None):
        self._pending_epoch = None
        if self.when == "train_end":
            self._recompute_and_say()

    def _recompute_pending_epoch(self):
        if self._pending_epoch is not None:
            epoch, self._pending_epoch = self._pending_epoch, None
            self._recompute_and_say(epoch)

    def _recompute_and_say(self, epoch=None):
        # `self.model`: on JAX the property puts the fit's state into the variables first.
        names, batches = _recompute(self.model, self.data, self.num_batches)
        if self.verbose:
            where = "" if epoch is None else f"\nEpoch {epoch + 1}: "
            print(f"{where}PreciseBN: recomputed the statistics of {len(names)} BatchNormalization "
                  f"layer{'' if len(names) == 1 else 's'} over {batches} batches.")

    def get_config(self):
        # Every argument but `data`, the training data: `PreciseBN(data, **config)` rebuilds it.
        return {"num_batches": self.num_batches, "when": self.when, "verbose": self.verbose}


def recompute_batchnorm(model, batches, num_batches=None):
    """Set BatchNormalization statistics to their exact values over some batches.

    For every `keras.layers.BatchNormalization` layer of `model` (nested
    models' included) that updates its statistics in training mode,
    `moving_mean` and `moving_variance` become the mean and the (biased)
    variance of the layer's inputs over all the examples of the first
    `num_batches` batches, as the current weights produce them in
    training-mode forward passes (`model(x, training=True)`, as in `fit`:
    Dropout is active, and each BatchNormalization normalizes with its
    batch's statistics). Nothing else changes: no weight, no optimizer
    state, no random seed state.

    How: each layer's `momentum` is set to 0 for the passes, so that after a
    pass its moving statistics are that batch's. The batches are combined
    on the device with Chan et al.'s parallel algorithm (count, mean, sum of
    squared deviations), weighted by batch size: exact when every example
    gives a layer the same number of values (a fixed image size, no mask).
    The results are assigned at the end; the momentum is put back, also on
    error (with the old statistics).

    A layer whose statistics the first batch leaves unchanged is one that
    `fit` does not update either (`trainable=False`, or called with
    `training=False` in a subclassed model's `call`): it is left exactly as
    it was. (In Keras 3 a functional model's `base(x, training=False)` is
    called with the outer call's `training=True`, in `fit` too: its layers
    update, and are recomputed. Freeze a base model with
    `base.trainable = False`.)

    On TensorFlow the passes run in a `tf.function`, on JAX in a jitted
    stateless call, compiled once a model. In a callback, pass `self.model`
    (on JAX, the property puts the fit's state into the variables).

    Example:

    ```python
    model.fit(x, y, epochs=2)
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64)]
    recompute_batchnorm(model, batches)   # ['bn1', 'bn2', ...]
    model.evaluate(x_val, y_val)
    ```

    Args:
        model: A built `keras.Model`.
        batches: An iterable of batches: of `x`, or of `(x, y)` or
            `(x, y, sample_weight)` tuples. A generator is consumed.
        num_batches: Integer >= 1, or `None`. The batches used, from the
            start; `None` uses all of them. Defaults to `None`.

    Returns:
        The names of the layers recomputed.
    """
    _check_batches("batches", batches)
    if num_batches is not None:
        num_batches = integer("num_batches", num_batches, 1)
    return _recompute(model, batches, num_batches)[0]


def _recompute(model, batches, num_batches):
    """`recompute_batchnorm`'s work: the names of the layers recomputed, and the batches used."""
    layers = batchnorm_layers(model)
    renorm = [layer.name for layer in layers if layer.renorm]
    if renorm:
        raise ValueError(
            f"BatchNormalization layers with `renorm=True` cannot be recomputed. Received: layers {renorm}")
    if not layers:
        return [], 0
    statistics = [v for layer in layers for v in (layer.moving_mean, layer.moving_variance)]
    seeds = seed_states(model)
    saved = [ops.copy(v.value) for v in statistics + seeds]
    momenta = [layer.momentum for layer in layers]
    recomputed = []
    try:
        for layer in layers:
            layer.momentum = 0.0  # read when the step traces
        step = _forward_step(model)
        totals = (ops.zeros((), "float32"),
                  [ops.zeros(layer.moving_mean.shape, layer.moving_mean.dtype) for layer in layers],
                  [ops.zeros(layer.moving_variance.shape, layer.moving_variance.dtype) for layer in layers])
        used = 0
        for batch in itertools.islice(iter(batches), num_batches):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
            # A backend tensor: on JAX a tf.data batch is a TensorFlow tensor, which jit refuses.
            totals, batch_statistics = step(keras.tree.map_structure(ops.convert_to_tensor, x), totals)
            if used == 0:
                updating = _differ(batch_statistics, saved)
            used += 1
        if used == 0:
            raise ValueError(
                "No batch to recompute the BatchNormalization statistics from: the data is empty, "
                "or a generator that an earlier recompute consumed.")
        count, means, squares = totals
        updated = [i for i, differs in enumerate(updating) if differs]
        for i in updated:
            layers[i].moving_mean.assign(means[i])
            layers[i].moving_variance.assign(squares[i] / count)
        recomputed = [layers[i] for i in updated]
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        kept = {id(v) for layer in recomputed for v in (layer.moving_mean, layer.moving_variance)}
        for variable, value in zip(statistics + seeds, saved):
            if id(variable) not in kept:
                variable.assign(value)
    return [layer.name for layer in recomputed], used


def batchnorm_layers(model):
    """The BatchNormalization layers of `model` and of the models nested in
    it, each once, in model order."""
    found = {}

    def walk(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.setdefault(id(layer), layer)
        for inner in getattr(layer, "layers", ()):
            walk(inner)

    walk(model)
    return list(found.values())


def _differ(batch_statistics, saved):
    """Whether each layer's first-batch statistics differ from its saved ones
    (`saved` starts with each layer's mean and variance)."""
    differ = [
        ops.logical_or(ops.any(ops.not_equal(mean, saved[2 * i])),
                       ops.any(ops.not_equal(variance, saved[2 * i + 1])))
        for i, (mean, variance) in enumerate(batch_statistics)
    ]
    return [bool(flag) for flag in ops.convert_to_numpy(ops.stack(differ))]


def _combine(x, totals, batch_statistics):
    """The totals (count, means, sums of squared deviations, one per layer)
    with batch `x`'s statistics added (Chan et al.'s parallel algorithm)."""
    count, means, squares = totals
    size = ops.cast(ops.shape(keras.tree.flatten(x)[0])[0], count.dtype)
    total = count + size
    new_means, new_squares = [], []
    for (batch_mean, batch_variance), mean, squares_ in zip(batch_statistics, means, squares):
        delta = batch_mean - mean
        new_means.append(mean + delta * (size / total))
        new_squares.append(squares_ + batch_variance * size + ops.square(delta) * (count * size / total))
    return total, new_means, new_squares


def _forward_step(model):
    """`step(x, totals) -> (totals, batch_statistics)`: a training-mode pass
    over batch `x` with every momentum at 0, and its BatchNormalization
    statistics (mean, variance) added to the totals by `_combine`.

    On TensorFlow and JAX it is compiled once a model (`_compiled`).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_step(model)
    if backend != "tensorflow":
        return lambda x, totals: _stateful_step(model, x, totals)
    return _compiled(model, _tf_step)


def _compiled(model, build):
    """`build(model_ref)`, a compiled pass, kept while the model lives
    (referring to it weakly: a cache must not keep it alive) and what a
    trace reads besides the weights stays the same: which variables train
    (a BatchNormalization layer's `trainable` decides its mode) and the
    layers' own `call` (`zoo.batchnorm` sets one for inference mode)."""
    signature = (tuple(id(v) for v in model.trainable_variables),
                 tuple("call" in vars(layer) for layer in batchnorm_layers(model)))
    cached = _COMPILED_STEPS.get(model)
    if cached is None or cached[0] != signature:
        cached = _COMPILED_STEPS[model] = (signature, build(weakref.ref(model)))
    return cached[1]


def _tf_step(model_ref):
    import tensorflow as tf

    # reduce_retracing: a smaller last batch retraces once, for any batch size.
    return tf.function(lambda x, totals: _stateful_step(model_ref(), x, totals), reduce_retracing=True)


def _stateful_step(model, x, totals):
    # Each layer's statistics now hold the batch's: its momentum is 0.
    model(x, training=True)
    batch_statistics = [(ops.convert_to_tensor(layer.moving_mean), ops.convert_to_tensor(layer.moving_variance))
                        for layer in batchnorm_layers(model)]
    return _combine(x, totals, batch_statistics), batch_statistics


def _jax_step(model):
    """The step as a jitted stateless call, the non-trainable state (seeds)
    carried from batch to batch; the model's variables are not written."""
    jitted = _compiled(model, _jax_stateless_step)
    trainable = [v.value for v in model.trainable_variables]
    state = [[v.value for v in model.non_trainable_variables]]

    def step(x, totals):
        state[0], totals, batch_statistics = jitted(trainable, state[0], x, totals)
        return totals, batch_statistics

    return step


def _jax_stateless_step(model_ref):
    import jax

    model = model_ref()
    index = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    positions = [(index[id(layer.moving_mean)], index[id(layer.moving_variance)])
                 for layer in batchnorm_layers(model)]

    def stateless_step(trainable, non_trainable, x, totals):
        _, non_trainable = model_ref().stateless_call(trainable, non_trainable, x, training=True)
        batch_statistics = [(non_trainable[i], non_trainable[j]) for i, j in positions]
        return non_trainable, _combine(x, totals, batch_statistics), batch_statistics

    return jax.jit(stateless_step)


def _check_batches(name, batches):
    """`batches` if it is an iterable of batches; an array or tensor is one batch, not an iterable of them."""
    if not isinstance(batches, collections.abc.Iterable) or hasattr(batches, "shape"):
        raise ValueError(
            f"Argument `{name}` must be an iterable of batches (a tf.data.Dataset, a PyDataset, "
            f"a list of (x, y) tuples). Received: {name}={_describe(batches)}")
    return batches


def _describe(value):
    shape = getattr(value, "shape", None)
    return f"<{type(value).__name__} of shape {tuple(shape)}>" if shape is not None else repr(value)
