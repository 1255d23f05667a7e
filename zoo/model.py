"""From a spec to a Keras model: backbone, new head, frozen and slow layers."""

import difflib
import fnmatch
import re

import h5py
import keras
import pandas as pd
from keras import layers

from zoo import solver as solvers
from zoo.backbones import get_backbone
from zoo.spec import SELECTOR_KEYS, SpecError, json_path

HEAD_PREFIX = "head_"


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


def build_trunk(backbone, unsafe=False):
    """The `Backbone` section as a functional model ending at its feature layer.

    Every way this can fail is a `SpecError` naming the file or field: a
    `.keras` file that is truncated or not a model, one whose Lambda layers
    would run Python code on loading (refused unless `unsafe`), a weights
    file that is corrupt or of another architecture, an input below the
    backbone's minimum, and ImageNet weights that cannot be downloaded.
    """
    if backbone.model:
        saved = load_saved_model(backbone.model, unsafe)
        names = [layer.name for layer in saved.layers]
        if backbone.cut_at not in names:
            close = difflib.get_close_matches(backbone.cut_at, names, n=3)
            raise SpecError([(json_path(["backbone", "cut_at"]),
                              f"no layer {backbone.cut_at!r} in {backbone.model}; "
                              f"close: {', '.join(close) or 'none'}")])
        return keras.Model(saved.inputs, saved.get_layer(backbone.cut_at).output, name="trunk")
    entry = get_backbone(backbone.name)
    from_file = backbone.weights not in (None, "imagenet")
    try:
        trunk = entry.build(weights=None if from_file else backbone.weights, input_shape=backbone.input_shape)
    except ValueError as error:  # keras.applications checks the input size and channels
        where = "$.backbone.input_shape" if "input" in str(error).lower() else "$.backbone"
        raise SpecError([(where, f"{entry.name}: {first_line(str(error))}")]) from None
    except Exception as error:
        if "URL fetch failure" not in str(error):
            raise
        raise SpecError([("$.backbone.weights", _no_download(entry.name, error))]) from None
    if from_file:
        load_weights_file(trunk, backbone.weights, "$.backbone.weights")
    return trunk


def _no_download(name, error):
    url = re.search(r"URL fetch failure on (\S+): ", str(error))
    url = url.group(1) if url else "the weights file"
    return (f"the ImageNet weights of {name} are not in the Keras cache and cannot be downloaded "
            f"(no network?). On a machine with a network, download {url} and set backbone.weights "
            "to the file's path.")


def load_saved_model(path, unsafe=False):
    """The `.keras` (or legacy `.h5`) model in `path`, loaded without its
    training config. Keras's safe mode refuses Lambda layers, whose code
    would run on loading, unless `unsafe`."""
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:
        text = str(error)
        if "safe_mode" in text:
            reason = (f"{path} has a Lambda layer: loading it would run the Python code stored in the "
                      "file. Refused; if you trust the file, pass --unsafe (unsafe=True).")
        elif path.endswith(".keras"):
            reason = f"{path} is not a readable .keras model (truncated, or another format): {first_line(text)}"
        elif path.endswith((".h5", ".hdf5")) and not h5py.is_hdf5(path):
            reason = f"{path} is not an HDF5 file (truncated, or another format)"
        elif path.endswith((".h5", ".hdf5")):
            reason = (f"{path} is not a whole Keras model ({first_line(text)}); a weights-only file goes "
                      "in backbone.weights with a registry backbone.name")
        else:
            reason = f"{path}: a saved model must be a .keras file (or a legacy .h5); {first_line(text)}"
        raise SpecError([("$.backbone.model", reason)]) from None


def load_weights_file(model, path, where):
    """`model.load_weights(path)`; a file that is not HDF5 or that does not
    fit `model` is a `SpecError` at `where` naming the first mismatching layer."""
    if not h5py.is_hdf5(path):
        raise SpecError([(where, f"{path} is not an HDF5 weights file (truncated, or another format)")])
    try:
        model.load_weights(path)
    except Exception as error:
        raise SpecError([(where, f"{path} cannot be loaded into {model.name}: "
                                 f"{_first_mismatch(model, path) or first_line(str(error))}")]) from None


def _first_mismatch(model, path):
    """The first layer of `model` whose weights the file lacks or shapes
    differently, in words; None if none is found (or the file's layout is
    not one Keras writes)."""
    try:
        stored = _stored_shapes(path)
    except (OSError, KeyError, ValueError):
        return None
    for layer in model.layers:
        shapes = [tuple(w.shape) for w in layer.weights]
        if not shapes:
            continue
        if layer.name not in stored:
            return f"the file has no weights for layer {layer.name!r}"
        if stored[layer.name] != shapes:
            return f"layer {layer.name!r} has weights {shapes} in the model but {stored[layer.name]} in the file"
    return None


def _stored_shapes(path):
    """`{layer name: [weight shapes]}` of a Keras weights file, in the
    Keras 3 layout (`.../vars` groups named by layer) or the legacy one."""
    shapes = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f  # a whole legacy model keeps them there
        if "layer_names" in root.attrs:  # legacy .h5
            for name in root.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                group = root[name]
                weights = [w.decode() if isinstance(w, bytes) else w for w in group.attrs.get("weight_names", [])]
                shapes[name] = [tuple(group[w].shape) for w in weights]
            return shapes

        def visit(name, item):
            if isinstance(item, h5py.Group) and name.endswith("vars") and "name" in item.attrs:
                shapes[item.attrs["name"]] = [tuple(item[key].shape) for key in sorted(item, key=int)]

        f.visititems(visit)
    return shapes


def first_line(text, limit=200):
    """The first line of an error message, at most `limit` characters."""
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[:limit] + "..."


def add_head(features, head):
    """The replacement classifier (a `Head` section) on top of `features`;
    its layers are `head_*`."""
    x = features
    if len(x.shape) > 2:
        pool = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D,
                "flatten": layers.Flatten}[head.pooling]
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


def build_network(backbone, head, name, unsafe=False):
    """Backbone + head as one flat functional model (uncompiled)."""
    trunk = build_trunk(backbone, unsafe)
    return keras.Model(trunk.inputs, add_head(trunk.output, head), name=name)


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


def configure_layers(model, frozen, slow, path=()):
    """Set `trainable` per layer and resolve each layer's multipliers.

    Every layer starts trainable; `frozen` selectors and `lr_mult: 0` freeze
    (a frozen BatchNormalization runs in inference mode). A layer picked by
    several `slow` groups takes the most specific one (the longest literal
    pattern; ties go to the group listed first).

    Returns `(table, lr_mult, decay_mult)`: a DataFrame with one row per
    group (group, lr_mult, decay_mult, layers, trainable_params) and the
    multipliers keyed by variable path, for `make_optimizer`.
    """
    path = list(path)
    frozen_names = set()
    for index, group in enumerate(frozen):
        frozen_names.update(selected_layers(model, group, path + ["frozen", index]))
    choice = {}
    for index, group in enumerate(slow):
        for name in selected_layers(model, group, path + ["slow", index]):
            current = choice.get(name)
            if current is None or _specificity(group) > _specificity(current):
                choice[name] = group
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


def compile_stage(model, solver, lr_mult, decay_mult):
    """Compile `model` for a stage's `Solver`: its optimizer, driven by the
    solver's LR schedule at every step."""
    from_logits = model.layers[-1].activation is keras.activations.linear
    model.compile(
        optimizer=solvers.optimizer(solver, lr_mult, decay_mult),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
        jit_compile=solver.jit_compile,
        steps_per_execution=solver.steps_per_execution,
    )
    return model
