"""From a spec to a Keras model: backbone, new head, frozen and slow layers."""

import difflib
import fnmatch
import re

import keras
import pandas as pd
from keras import layers

from zoo import solver as solvers
from zoo.errors import SpecError, json_path
from zoo.optimizers import plain_copy
from zoo.spec import SELECTOR_KEYS

HEAD_PREFIX = "head_"
METRICS = ["accuracy"]


def filler(config):
    """A Keras initializer from a Caffe `Filler`.

    `xavier` and `msra` follow Caffe: variance normalized by fan-in unless
    `variance_norm` says `fan_out` or `average` (the latter is Glorot's);
    `msra` is an untruncated Gaussian with std sqrt(2 / n).
    """
    kind = config.type
    norm = config.variance_norm.replace("average", "fan_avg")
    if kind == "constant":
        return keras.initializers.Constant(config.value)
    if kind == "gaussian":
        return keras.initializers.RandomNormal(config.mean, config.std)
    if kind == "uniform":
        return keras.initializers.RandomUniform(config.min, config.max)
    if kind == "xavier":
        return keras.initializers.VarianceScaling(1.0, mode=norm, distribution="uniform")
    if kind == "msra":
        return keras.initializers.VarianceScaling(2.0, mode=norm, distribution="untruncated_normal")
    raise ValueError(f"Unknown filler type {kind!r}")


def add_head(features, head):
    """The replacement classifier (a `Head` section) on top of `features`:
    a feature map `(h, w, c)` or a transformer's token sequence `(tokens,
    c)`. Its layers are `head_*`, and all are Keras's own, so a saved
    network loads without this package."""
    x = features
    if len(x.shape) == 3 and head.pooling == "token":
        if x.shape[1] is None:
            raise SpecError([("$.head.pooling", "\"token\" needs a fixed number of tokens; "
                                                "set backbone.input_shape")])
        # The first (class) token: crop the sequence to it, then drop its axis.
        x = layers.Cropping1D((0, x.shape[1] - 1), name=f"{HEAD_PREFIX}token")(x)
        x = layers.Flatten(name=f"{HEAD_PREFIX}pool")(x)
    elif head.pooling == "token":
        raise SpecError([("$.head.pooling", f"\"token\" takes the first token of a transformer's sequence, "
                                            f"but the backbone's features have the shape {tuple(x.shape[1:])}: "
                                            "use avg, max or flatten")])
    elif head.pooling == "flatten" and None in x.shape[1:]:
        raise SpecError([("$.head.pooling", f"\"flatten\" needs features of a fixed size, but the backbone's "
                                            f"are {tuple(x.shape[1:])}: set backbone.input_shape, or use avg or max")])
    elif len(x.shape) in (3, 4):
        pool = {"avg": (layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D),
                "max": (layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D),
                "flatten": (layers.Flatten, layers.Flatten)}[head.pooling][len(x.shape) - 3]
        x = pool(name=f"{HEAD_PREFIX}pool")(x)
    init = dict(kernel_initializer=filler(head.weight_filler),
                bias_initializer=filler(head.bias_filler))
    for index, units in enumerate(head.hidden):
        x = layers.Dense(units, activation=head.hidden_activation,
                         name=f"{HEAD_PREFIX}hidden{index + 1}", **init)(x)
    if head.dropout:
        x = layers.Dropout(head.dropout, name=f"{HEAD_PREFIX}dropout")(x)
    # float32 output, also under mixed precision.
    return layers.Dense(head.classes, activation=head.activation,
                        name=f"{HEAD_PREFIX}classifier", dtype="float32", **init)(x)


def build_network(trunk, head, name):
    """A `zoo.backbones.Trunk` + head as one flat functional model (uncompiled)."""
    return keras.Model(trunk.model.inputs, add_head(trunk.model.output, head), name=name)


def selected_layers(model, group, path):
    """Names of the layers a selector picks, in model order; none is a SpecError."""
    names = [layer.name for layer in model.layers]
    if group.match is not None:
        picked = [n for n in names if fnmatch.fnmatchcase(n, group.match)]
        probe = group.match.replace("*", "").replace("?", "")
    elif group.regex is not None:
        picked = [n for n in names if re.search(group.regex, n)]
        probe = group.regex
    elif group.up_to is not None:
        picked = names[: names.index(group.up_to) + 1] if group.up_to in names else []
        probe = group.up_to
    else:
        start, stop = group.indices
        picked = names[start:stop]
        probe = None
    if not picked:
        key, value = _selector(group)
        close = difflib.get_close_matches(probe, names, n=3, cutoff=0.4) if probe else []
        hint = f"; close layer names: {', '.join(close)}" if close else f"; the model has {len(names)} layers"
        raise SpecError([(json_path(path + [key]), f"{value!r} matches no layer{hint}")])
    return picked


def _specificity(group):
    """Longer literal patterns win; whole-range selectors are the least specific."""
    if group.match is not None:
        return len(re.sub(r"[*?\[\]]", "", group.match))
    if group.regex is not None:
        return len(group.regex)
    return 0


def _selector(group):
    """`(key, value)` of the one selector key a group sets."""
    return next((key, getattr(group, key)) for key in SELECTOR_KEYS if getattr(group, key) is not None)


def _describe(group):
    key, value = _selector(group)
    return f"{key} {list(value) if isinstance(value, tuple) else value}"


def chosen_groups(model, groups, path, layer_type=None):
    """`{layer name: group}`: the group of `groups` (selectors at JSON path
    `path`) that picks each layer; a layer picked by several takes the most
    specific one (the longest literal pattern; ties go to the group listed
    first). With `layer_type` (a layer class), only layers of that type
    count. A group that picks no layer (of that type) is a SpecError, all
    such groups in one."""
    of_type = None if layer_type is None else [layer.name for layer in model.layers if isinstance(layer, layer_type)]
    choice, errors = {}, []
    for index, group in enumerate(groups):
        try:
            picked = selected_layers(model, group, path + [index])
        except SpecError as error:
            errors += error.errors
            continue
        if of_type is not None:
            picked = [name for name in picked if name in of_type]
            if not picked:
                key, value = _selector(group)
                errors.append((json_path(path + [index, key]), f"{value!r} matches no {layer_type.__name__} "
                                                               f"layer; the model's are {_listed(of_type)}"))
        for name in picked:
            current = choice.get(name)
            if current is None or _specificity(group) > _specificity(current):
                choice[name] = group
    if errors:
        raise SpecError(errors)
    return choice


def _listed(names, shown=5):
    """'bn1, bn2, bn3', or the first `shown` and how many more ('none' for none)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (", ".join(names[:shown]) or "none") + more


def configure_layers(model, frozen, slow, path=(), also_frozen=()):
    """Set `trainable` per layer and resolve each layer's multipliers.

    Every layer starts trainable; `frozen` selectors, the layers named in
    `also_frozen` and `lr_mult: 0` freeze (a frozen BatchNormalization runs
    in inference mode). A layer picked by several `slow` groups takes the
    most specific one (`chosen_groups`).

    Returns `(table, lr_mult, decay_mult)`: a DataFrame with one row per
    group (group, lr_mult, decay_mult, layers, trainable_params) and the
    multipliers keyed by variable path, for `make_optimizer`.
    """
    path = list(path)
    frozen_names = set(also_frozen)
    for index, group in enumerate(frozen):
        frozen_names.update(selected_layers(model, group, path + ["frozen", index]))
    choice = chosen_groups(model, slow, path + ["slow"])
    rows, lr_mult, decay_mult = {}, {}, {}
    for layer in model.layers:
        group = choice.get(layer.name)
        lr, decay = (group.lr_mult, group.decay_mult) if group else (1.0, 1.0)
        layer.trainable = layer.name not in frozen_names and lr > 0
        label = _describe(group) if group else "(other layers)"
        if not layer.trainable:
            label, lr, decay = "frozen", 0.0, 0.0
        row = rows.setdefault(label, [label, lr, decay, 0, 0])
        row[3] += 1
        if layer.trainable:
            row[4] += sum(int(keras.ops.size(w)) for w in layer.trainable_weights)
            for weight in layer.trainable_weights:
                if lr != 1.0:
                    lr_mult[weight.path] = lr
                if decay != 1.0:
                    decay_mult[weight.path] = decay
    table = pd.DataFrame(rows.values(), columns=["group", "lr_mult", "decay_mult", "layers", "trainable_params"])
    return table, lr_mult, decay_mult


def portable(model):
    """`model`'s network compiled with plain Keras parts, for `model.keras`:
    `keras.saving.load_model` opens it where this package is not installed.
    Its optimizer is the stage's, as its plain Keras class at the learning
    rate it ended at (`optimizers.plain_copy`), with fresh (zero) state;
    the checkpoint keeps the zoo optimizer's."""
    network = keras.Model(model.inputs, model.outputs, name=model.name)
    optimizer = plain_copy(model.optimizer)
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):  # mixed precision
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    network.compile(optimizer=optimizer, loss=model.loss, metrics=METRICS)
    # Built, so that loading the file finds every optimizer variable it expects.
    network.optimizer.build(network.trainable_variables)
    return network


def compile_stage(model, solver, lr_mult, decay_mult):
    """Compile `model` for a stage's `Solver`: its optimizer, driven by the
    solver's LR schedule at every step."""
    from_logits = model.layers[-1].activation is keras.activations.linear
    model.compile(
        optimizer=solvers.optimizer(solver, lr_mult, decay_mult),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=METRICS,
        jit_compile=solver.jit_compile,
        steps_per_execution=solver.steps_per_execution,
    )
    return model
