"""How a stage runs its BatchNormalization layers: a spec's `batchnorm` section.

Each BatchNormalization layer among the model's layers runs in one mode:

- "inference": its running statistics normalize in training too, and its
  gamma and beta train at the layer's `lr_mult`. Keras's transfer-learning
  guide asks for this when fine-tuning a pretrained trunk, so a stage's
  small batches of new data never replace the statistics the trunk learned,
  and unfreezing a trunk does not switch its layers to batch statistics.
- "train": Keras's default: batch statistics in training, running
  statistics updated at the layer's `momentum`.
- "frozen": inference, and nothing trains (Keras's `trainable = False`).

The default is "inference" for a pretrained trunk and "train" from scratch.
"""

import contextlib
import weakref

import keras

from callbacks.precise_bn import batchnorm_layers
from zoo.model import chosen_groups

# Each layer's own momentum, as built, for stages that do not replace it.
_OWN_MOMENTUM = weakref.WeakKeyDictionary()


def layer_modes(model, section, pretrained, path):
    """`{layer name: (mode, momentum)}` of `model`'s BatchNormalization
    layers (`callbacks.precise_bn.batchnorm_layers`: nested models' too)
    under a stage's `BatchNorm` section (JSON path `path`): a layer's
    `layers` group, else the section, else the default (momentum None: the
    layer's own). `layers` selectors pick among `model.layers`; one that
    picks no BatchNormalization layer is a SpecError."""
    default_mode = section.mode or ("inference" if pretrained else "train")
    choice = chosen_groups(model, section.layers, list(path) + ["batchnorm", "layers"],
                           layer_type=keras.layers.BatchNormalization)
    modes = {}
    for layer in batchnorm_layers(model):
        group = choice.get(layer.name)
        mode = group.mode if group and group.mode else default_mode
        momentum = group.momentum if group and group.momentum is not None else section.momentum
        modes[layer.name] = (mode, momentum)
    return modes


def set_modes(model, modes):
    """Put each BatchNormalization layer of `model` in its mode and momentum
    (`layer_modes`), after `configure_layers` (which counts a top-level
    "frozen" layer as frozen in its table). A "frozen" layer gets
    `trainable = False`; an "inference" one is called with `training=False`
    whatever the model is called with. Train functions compiled afterwards
    see the change (every stage compiles)."""
    for layer in batchnorm_layers(model):
        mode, momentum = modes[layer.name]
        own = _OWN_MOMENTUM.setdefault(layer, layer.momentum)
        layer.momentum = own if momentum is None else momentum
        if mode == "frozen":
            layer.trainable = False
        if mode == "inference":
            layer.call = _with_running_statistics(layer)
        elif "call" in vars(layer):
            del layer.call


@contextlib.contextmanager
def own_momentum(model):
    """Inside the block, `model`'s BatchNormalization layers have their own
    momentum, as built, so that a model saved there loads as it was built,
    not with a stage's `batchnorm.momentum`; the stage's after it."""
    layers = batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = _OWN_MOMENTUM.get(layer, layer.momentum)
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def _with_running_statistics(layer):
    # Keras 3 lets the model's `training` override a `training=False` given
    # where a layer is called in a functional graph (so Keras's own
    # `base_model(x, training=False)` recipe trains the statistics), so the
    # layer's own call ignores it. tests/test_keras_internals.py fences this.
    call = type(layer).call

    def call_in_inference_mode(inputs, training=None, mask=None):
        return call(layer, inputs, training=False, mask=mask)

    return call_in_inference_mode


def describe_modes(modes):
    """One line: how many layers run in each mode and momentum."""
    counts = {}
    for mode, momentum in modes.values():
        key = mode + ("" if momentum is None else f", momentum {momentum:g}")
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{count} {key}" for key, count in counts.items())
