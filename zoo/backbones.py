"""The backbone registry: every keras.applications model, plus a small CNN.

Each entry knows how to build the model without its classifier, its default
input size, its `preprocess_input`, and its feature layer (the layer the new
head goes on). Names are matched ignoring case, `_` and `-`, so
`mobilenet_v3_small`, `MobileNetV3Small` and `mobilenetv3small` are one entry.
"""

import dataclasses
import difflib
import fnmatch

import keras

from zoo.small_cnn import small_cnn

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
class Backbone:
    """One registry entry.

    Attributes:
        name: The registry name (the constructor's name, lower case).
        constructor: `keras.applications` constructor (or `small_cnn`).
        module: Where it lives, e.g. `keras.applications.resnet`.
        input_size: Default `(height, width, channels)`.
        preprocess_input: The model's own input preprocessing.
        pretrained: Whether `weights="imagenet"` exists for it.
    """

    name: str
    constructor: object
    module: str
    input_size: tuple
    preprocess_input: object
    pretrained: bool = True

    def build(self, weights=None, input_shape=None):
        """The backbone without its classifier, as a functional `keras.Model`.

        `weights`: `"imagenet"` or `None` (`zoo.model.build_trunk` loads a
        weights file, naming the first layer that does not fit). The
        model's output is its feature layer. An input below the model's
        minimum size is a `ValueError`.
        """
        input_shape = tuple(input_shape or self.input_size)
        if not self.pretrained:
            if weights == "imagenet":
                raise ValueError(f"Backbone {self.name!r} has no ImageNet weights.")
            model = small_cnn(input_shape, classes=1)
            # Keep only the convolutional trunk: the head is the spec's to add.
            return keras.Model(model.input, model.get_layer("relu3").output, name=self.name)
        return self.constructor(include_top=False, weights=weights, input_shape=input_shape)


def _normalize(name):
    return name.lower().replace("_", "").replace("-", "")


def _identity(x, data_format=None):
    return x


def _discover():
    registry = {}
    for attr in dir(keras.applications):
        constructor = getattr(keras.applications, attr)
        if not attr[0].isupper() or not callable(constructor):
            continue
        # keras.src.applications.resnet -> the public keras.applications.resnet
        module_name = constructor.__module__.rsplit(".", 1)[-1]
        module = getattr(keras.applications, module_name)
        side = _INPUT_SIZE.get(attr, 224)
        registry[_normalize(attr)] = Backbone(
            name=attr.lower(),
            constructor=constructor,
            module=f"keras.applications.{module_name}",
            input_size=(side, side, 3),
            preprocess_input=module.preprocess_input,
        )
    registry["smallcnn"] = Backbone(
        name="small_cnn",
        constructor=small_cnn,
        module="zoo.small_cnn",
        input_size=(8, 8, 1),
        preprocess_input=_identity,
        pretrained=False,
    )
    return registry


REGISTRY = _discover()


def get_backbone(name):
    """The entry called `name`; an unknown name lists the closest ones."""
    entry = REGISTRY.get(_normalize(str(name)))
    if entry is not None:
        return entry
    close = difflib.get_close_matches(_normalize(str(name)), list(REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(REGISTRY[c].name for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} `zoo list` shows all {len(REGISTRY)} backbones."
    )


def list_backbones(pattern="*"):
    """Registry entries whose name matches the glob `pattern`, sorted by name."""
    pattern = pattern.lower()
    return sorted(
        (e for e in REGISTRY.values() if fnmatch.fnmatch(e.name, pattern) or
         fnmatch.fnmatch(_normalize(e.name), _normalize(pattern))),
        key=lambda e: e.name,
    )
