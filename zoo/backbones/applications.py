"""The `name` source: every keras.applications model, plus a small CNN.

Each entry knows how to build the model without its classifier, its default
input size, its `preprocess_input`, and its feature layer (the layer the new
head goes on). Names are matched ignoring case, `_` and `-`, so
`mobilenet_v3_small`, `MobileNetV3Small` and `mobilenetv3small` are one entry.

The registry is a static table (`MODELS`), so that checking a spec's
backbone name and `zoo list` import no Keras; Keras (and h5py) are imported
when a model is built.
"""

import dataclasses
import difflib
import importlib
import re

from zoo.backbones import BackboneSource, Entry, Trunk, cut, fixed_size, plain_name, register_source
from zoo.errors import SpecError, first_line

# Every keras.applications constructor: (its module in keras.applications,
# which holds its `preprocess_input`; its parameters without the classifier,
# `include_top=False`, as `count_params` gives them in Keras 3.15).
# `python -m zoo.backbones.applications` prints it afresh (about 90 s);
# tests/zoo/test_backbones.py checks the names and modules against the
# installed keras.applications, and a few parameter counts.
MODELS = {
    "ConvNeXtBase": ("convnext", 87566464), "ConvNeXtLarge": ("convnext", 196230336),
    "ConvNeXtSmall": ("convnext", 49454688), "ConvNeXtTiny": ("convnext", 27820128),
    "ConvNeXtXLarge": ("convnext", 348147968), "DenseNet121": ("densenet", 7037504),
    "DenseNet169": ("densenet", 12642880), "DenseNet201": ("densenet", 18321984),
    "EfficientNetB0": ("efficientnet", 4049571), "EfficientNetB1": ("efficientnet", 6575239),
    "EfficientNetB2": ("efficientnet", 7768569), "EfficientNetB3": ("efficientnet", 10783535),
    "EfficientNetB4": ("efficientnet", 17673823), "EfficientNetB5": ("efficientnet", 28513527),
    "EfficientNetB6": ("efficientnet", 40960143), "EfficientNetB7": ("efficientnet", 64097687),
    "EfficientNetV2B0": ("efficientnet_v2", 5919312), "EfficientNetV2B1": ("efficientnet_v2", 6931124),
    "EfficientNetV2B2": ("efficientnet_v2", 8769374), "EfficientNetV2B3": ("efficientnet_v2", 12930622),
    "EfficientNetV2L": ("efficientnet_v2", 117746848), "EfficientNetV2M": ("efficientnet_v2", 53150388),
    "EfficientNetV2S": ("efficientnet_v2", 20331360), "InceptionResNetV2": ("inception_resnet_v2", 54336736),
    "InceptionV3": ("inception_v3", 21802784), "MobileNet": ("mobilenet", 3228864),
    "MobileNetV2": ("mobilenet_v2", 2257984), "MobileNetV3Large": ("mobilenet_v3", 2996352),
    "MobileNetV3Small": ("mobilenet_v3", 939120), "NASNetLarge": ("nasnet", 84916818),
    "NASNetMobile": ("nasnet", 4269716), "ResNet101": ("resnet", 42658176),
    "ResNet101V2": ("resnet_v2", 42626560), "ResNet152": ("resnet", 58370944),
    "ResNet152V2": ("resnet_v2", 58331648), "ResNet50": ("resnet", 23587712),
    "ResNet50V2": ("resnet_v2", 23564800), "VGG16": ("vgg16", 14714688), "VGG19": ("vgg19", 20024384),
    "Xception": ("xception", 20861480),
}
# The input side each model was trained on at ImageNet (224 unless listed).
_INPUT_SIZE = {
    "InceptionV3": 299, "InceptionResNetV2": 299, "Xception": 299, "NASNetLarge": 331,
    "EfficientNetB1": 240, "EfficientNetB2": 260, "EfficientNetB3": 300,
    "EfficientNetB4": 380, "EfficientNetB5": 456, "EfficientNetB6": 528,
    "EfficientNetB7": 600, "EfficientNetV2B1": 240, "EfficientNetV2B2": 260,
    "EfficientNetV2B3": 300, "EfficientNetV2S": 384, "EfficientNetV2M": 480,
    "EfficientNetV2L": 480,
}


@dataclasses.dataclass(frozen=True)
class Application:
    """One `keras.applications` model (or `small_cnn`).

    Attributes:
        name: The registry name (the constructor's name, lower case).
        constructor_path: Where its constructor is, as `module.name`
            (`keras.applications.ResNet50`); `constructor` imports it.
        module: The module of its `preprocess_input`, e.g.
            `keras.applications.resnet`.
        input_size: Default `(height, width, channels)`.
        params: Parameters without the classifier.
        pretrained: Whether `weights="imagenet"` exists for it.
    """

    name: str
    constructor_path: str
    module: str
    input_size: tuple
    params: int
    pretrained: bool = True

    @property
    def constructor(self):
        """The `keras.applications` constructor (or `small_cnn`)."""
        module, name = self.constructor_path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)

    @property
    def preprocess_input(self):
        """The model's own input preprocessing, `<module>.preprocess_input`."""
        return importlib.import_module(self.module).preprocess_input

    def build(self, weights=None, input_shape=None):
        """The backbone without its classifier, as a functional `keras.Model`.

        `weights`: `"imagenet"` or `None` (the source loads a weights file,
        naming the first layer that does not fit). The model's output is its
        feature layer. An input below the model's minimum size is a
        `ValueError`.
        """
        input_shape = tuple(input_shape or self.input_size)
        if not self.pretrained:
            if weights == "imagenet":
                raise ValueError(f"Backbone {self.name!r} has no ImageNet weights.")
            import keras

            model = self.constructor(input_shape, classes=1)
            # Keep only the convolutional trunk: the head is the spec's to add.
            return keras.Model(model.input, model.get_layer("relu3").output, name=self.name)
        return self.constructor(include_top=False, weights=weights, input_shape=input_shape)

    def entry(self):
        return Entry(source="keras.applications" if self.pretrained else "zoo", name=self.name,
                     family=self.module.rsplit(".", 1)[-1], input_size=self.input_size[:2],
                     params=self.params, pretrained="imagenet" if self.pretrained else "")


def _registry():
    registry = {}
    for constructor, (module, params) in MODELS.items():
        side = _INPUT_SIZE.get(constructor, 224)
        registry[plain_name(constructor)] = Application(
            name=constructor.lower(),
            constructor_path=f"keras.applications.{constructor}",
            module=f"keras.applications.{module}",
            input_size=(side, side, 3),
            params=params,
        )
    registry["smallcnn"] = Application(
        name="small_cnn",
        constructor_path="zoo.small_cnn.small_cnn",
        module="zoo.small_cnn",
        input_size=(8, 8, 1),
        params=28448,  # tests/zoo/test_backbones.py builds it
        pretrained=False,
    )
    return registry


REGISTRY = _registry()


def get_backbone(name):
    """The `Application` called `name`; an unknown name lists the closest ones."""
    entry = REGISTRY.get(plain_name(str(name)))
    if entry is not None:
        return entry
    close = difflib.get_close_matches(plain_name(str(name)), list(REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(REGISTRY[c].name for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} `zoo list --source keras.applications` shows them all; "
        "`zoo list --source keras_hub` the KerasHub presets (`backbone.preset`)."
    )


@register_source
class Applications(BackboneSource):
    """`{"name": ..., "weights": "imagenet" | file | null, "input_shape": [h, w, c]}`."""

    key = "name"
    options = ("weights", "input_shape")

    def errors(self, backbone, exists):
        errors = []
        try:
            entry = get_backbone(backbone["name"])
        except ValueError as error:
            errors.append(("$.backbone.name", str(error)))
        else:
            if backbone.get("weights") == "imagenet" and not entry.pretrained:
                errors.append(("$.backbone.weights", f"{entry.name} has no ImageNet weights"))
        weights = backbone.get("weights")
        if weights not in (None, "imagenet") and not exists(weights):
            errors.append(("$.backbone.weights", f"no such weights file: {weights}"))
        return errors

    def local_paths(self, backbone):
        return ["weights"] if backbone.get("weights") not in (None, "imagenet") else []

    def build(self, backbone, unsafe=False):
        entry = get_backbone(backbone.name)
        from_file = backbone.weights not in (None, "imagenet")
        try:
            model = entry.build(weights=None if from_file else backbone.weights, input_shape=backbone.input_shape)
        except ValueError as error:  # keras.applications checks the input size and channels
            where = "$.backbone.input_shape" if "input" in str(error).lower() else "$.backbone"
            raise SpecError([(where, f"{entry.name}: {first_line(str(error))}")]) from None
        except Exception as error:
            if "URL fetch failure" not in str(error):
                raise
            raise SpecError([("$.backbone.weights", _no_download(entry.name, error))]) from None
        if from_file:
            load_weights_file(model, backbone.weights, "$.backbone.weights")
        return Trunk(cut(model, backbone.cut_at, "$.backbone.cut_at", entry.name), entry.preprocess_input,
                     fixed_size(model), pretrained=backbone.weights is not None)

    def entries(self):
        return [entry.entry() for entry in REGISTRY.values()]


def _no_download(name, error):
    url = re.search(r"URL fetch failure on (\S+): ", str(error))
    url = url.group(1) if url else "the weights file"
    return (f"the ImageNet weights of {name} are not in the Keras cache and cannot be downloaded "
            f"(no network?). On a machine with a network, download {url} and set backbone.weights "
            "to the file's path.")


def load_weights_file(model, path, where):
    """`model.load_weights(path)`; a file that is not HDF5 or that does not
    fit `model` is a `SpecError` at `where` naming the first mismatching layer."""
    import h5py

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
    import h5py

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


def _measured_models():
    """`MODELS` afresh: every keras.applications model built without weights."""
    import keras

    models = {}
    for name in sorted(dir(keras.applications)):
        constructor = getattr(keras.applications, name)
        if name[0].isupper() and callable(constructor):
            # keras.src.applications.resnet -> the public keras.applications.resnet
            module = constructor.__module__.rsplit(".", 1)[-1]
            side = _INPUT_SIZE.get(name, 224)
            model = constructor(include_top=False, weights=None, input_shape=(side, side, 3))
            models[name] = (module, model.count_params())
            keras.backend.clear_session()
    return models


if __name__ == "__main__":
    print(_measured_models())
