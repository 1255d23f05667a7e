"""The `preset` source: a KerasHub image backbone.

`preset` is what `keras_hub.models.Backbone.from_preset` takes: a built-in
preset name (`resnet_50_imagenet`, downloaded once into the KerasHub
cache), a `kaggle://`, `hf://`, `modelscope://` or `gs://` handle, or a
local preset folder as `save_to_preset` writes it, which needs no network.
The preset's own image converter (resize, rescale, mean/std) is the
backbone's input preprocessing. The head goes on the backbone's feature
output, on a named layer, or on a level of its feature pyramid (`"P4"`).

Keras and keras_hub are imported when a preset is built, not before: the
built-in presets a spec may name, and `zoo list`, come from a table
generated from keras_hub (`presets`).
"""

import difflib
import functools
import importlib.metadata
import json
import os
import re
import shlex

from zoo.backbones import BackboneSource, Entry, Trunk, cut, fixed_size, register_source
from zoo.errors import SpecError, first_line

HANDLE_SCHEMES = ("kaggle://", "hf://", "modelscope://", "gs://")
PYRAMID_LEVEL = re.compile(r"P\d+")
CLASS_NAMES = "class_names.json"
# Which head pooling of the spec each KerasHub classifier head can take
# (keyed by the class whose __init__ builds the head; others have heads of
# their own, such as VGG's hidden layers).
_CLASSIFIER_POOLING = {
    "ImageClassifier": {"avg": "avg", "max": "max"},
    "ViTImageClassifier": {"token": "token", "avg": "gap"},
    "DeiTImageClassifier": {"token": "token", "avg": "gap"},
}


def is_local(preset):
    """Whether `preset` is a folder: a path, written with a `/` (`./my_preset`),
    rather than a built-in name or a handle."""
    return not preset.startswith(HANDLE_SCHEMES) and ("/" in preset or os.sep in preset)


@functools.lru_cache(maxsize=1)
def presets():
    """KerasHub's built-in presets as two dicts: `{name: (backbone class,
    family, (height, width) it was trained at or None, parameters)}` of the
    image backbones and `{name: backbone class}` of the others.

    From `zoo.backbones.kerashub_presets` when it was generated from the
    installed keras-hub, which imports nothing; else read from keras_hub
    itself (`live_presets`, which imports it and TensorFlow: seconds).
    """
    # Why a generated table rather than reading keras_hub's
    # `src/models/*/*_presets.py` without importing it: most of those files
    # are dict literals (in 0.32, 66 of 70 hold `backbone_presets = {...}`;
    # others name it differently or leave it empty), but which backbone
    # class a preset belongs to is set by code (a `register_presets` call in
    # each model's `__init__.py`), and which classes are image backbones only
    # the class hierarchy says (`ImageClassifier.backbone_cls`,
    # `FeaturePyramidBackbone`). Reading that from source would re-implement
    # KerasHub's registration on its private file layout, and break silently
    # when it moves. The table is written by the same code as the live path
    # (`write_presets_table`), is used only for the keras-hub version it was
    # made from, and tests/zoo/test_backbones.py compares it with the live
    # metadata.
    from zoo.backbones import kerashub_presets

    try:
        installed = importlib.metadata.version("keras-hub")
    except importlib.metadata.PackageNotFoundError:
        installed = None  # the live path says that keras_hub cannot be imported
    if installed == kerashub_presets.KERAS_HUB:
        return kerashub_presets.IMAGE, kerashub_presets.OTHER
    return live_presets()


def live_presets():
    """`presets()` read from the installed keras_hub (importing it)."""
    image_classes = image_backbone_classes()
    image, other = {}, {}
    for name, (cls, metadata) in builtin_presets().items():
        if cls in image_classes:
            image[name] = (cls, metadata.get("path", cls.lower()),
                           _listed_input_size(name, metadata.get("description", "")), metadata.get("params"))
        else:
            other[name] = cls
    return image, other


@functools.lru_cache(maxsize=1)
def image_backbone_classes():
    """KerasHub's image backbones: those of its image classifiers, and its
    feature-pyramid backbones (DINOv2, DINOv3, ...), by class name."""
    import keras_hub

    pyramid = keras_hub.models.FeaturePyramidBackbone
    classes = {task.backbone_cls for task in classifier_classes()}
    classes |= {cls for cls in _public_classes() if issubclass(cls, pyramid) and cls is not pyramid}
    return {cls.__name__: cls for cls in classes}


@functools.lru_cache(maxsize=1)
def builtin_presets():
    """`{name: (backbone class name, metadata)}` of every built-in KerasHub preset."""
    import keras_hub

    backbones = [cls for cls in _public_classes() if issubclass(cls, keras_hub.models.Backbone)]
    found = {}
    for cls in backbones:
        if any(other is not cls and issubclass(other, cls) for other in backbones):
            continue  # a base class: its `presets` are its subclasses'
        for preset, info in cls.presets.items():
            found[preset] = (cls.__name__, info.get("metadata", {}))
    return dict(sorted(found.items()))


def _listed_input_size(name, description):
    """The input size a preset was trained at, as its description or name
    says it (KerasHub's metadata has no field for it); None if neither does."""
    found = (re.search(r"(\d{2,4}) ?x ?\d{2,4}", description) or re.search(r"image size (\d{2,4})", description)
             or re.search(r"_r(\d{3})_", name) or re.search(r"_(\d{3,4})$", name))
    return (int(found.group(1)),) * 2 if found else None


def write_presets_table():
    """Write `zoo/backbones/kerashub_presets.py`, the table `presets` reads,
    from the installed keras_hub."""
    version = importlib.metadata.version("keras-hub")
    image, other = live_presets()
    text = ('"""KerasHub\'s built-in presets, which `zoo.backbones.kerashub.presets` reads\n'
            f"without importing KerasHub. Generated from keras-hub {version} by\n"
            '`python -m zoo.backbones.kerashub`; do not edit."""\n\n'
            f"KERAS_HUB = {version!r}\n\n"
            "# Image backbones: name -> (backbone class, family, (height, width) it was\n"
            "# trained at or None, parameters).\n"
            "IMAGE = {\n" + "".join(f"    {name!r}: {entry!r},\n" for name, entry in image.items()) + "}\n\n"
            "# Every other preset (text, audio, detection, ...): name -> backbone class.\n"
            "OTHER = {\n" + "".join(f"    {name!r}: {cls!r},\n" for name, cls in other.items()) + "}\n")
    with open(os.path.join(os.path.dirname(__file__), "kerashub_presets.py"), "w") as f:
        f.write(text)


@register_source
class KerasHub(BackboneSource):
    """`{"preset": name | handle | folder, "input_shape": [h, w, c], "cut_at": layer | "P4"}`."""

    key = "preset"
    options = ("input_shape",)

    def errors(self, backbone, exists):
        preset = backbone["preset"]
        if preset.startswith(HANDLE_SCHEMES):
            return []
        if is_local(preset):
            return [] if exists(preset, folder=True) else [("$.backbone.preset", f"no such preset folder: {preset}")]
        image, other = presets()
        if preset in other:
            return [("$.backbone.preset", f"{preset!r} is a {other[preset]} preset, not an image backbone; "
                                          "`zoo list --source keras_hub` shows the image presets")]
        if preset not in image:
            close = ", ".join(difflib.get_close_matches(preset, list(image), n=3, cutoff=0.6))
            return [("$.backbone.preset", f"no KerasHub preset {preset!r}" + (f"; did you mean {close}?" if close else "")
                     + " `zoo list --source keras_hub` shows the image presets; a preset folder "
                       "is a path (with a /).")]
        return []

    def local_paths(self, backbone):
        return ["preset"] if is_local(backbone["preset"]) else []

    def build(self, backbone, unsafe=False):
        import keras_hub

        preset = backbone.preset
        options = {"image_shape": tuple(backbone.input_shape)} if backbone.input_shape else {}
        try:
            hub_backbone = keras_hub.models.Backbone.from_preset(preset, **options)
        except Exception as error:
            if options and "image_shape" in str(error):
                reason = ("this backbone family does not take an input shape (KerasHub's image_shape); leave "
                          "input_shape out" if "Unrecognized keyword" in str(error) else first_line(str(error)))
                raise SpecError([("$.backbone.input_shape", f"{preset}: {reason}")]) from None
            raise SpecError([("$.backbone.preset", _cannot_load(preset, error))]) from None
        inputs = hub_backbone.inputs
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise SpecError([("$.backbone.preset", f"{preset} is a {type(hub_backbone).__name__}, which takes "
                                                   f"{len(inputs)} inputs, not one batch of images; zoo fine-tunes "
                                                   "image backbones (`zoo list --source keras_hub`)")])
        try:
            converter = keras_hub.layers.ImageConverter.from_preset(preset)
        except FileNotFoundError:  # a preset saved without its image converter
            converter = None
        except Exception as error:
            raise SpecError([("$.backbone.preset", _cannot_load(preset, error))]) from None
        # The size the backbone takes: a given input_shape, else its converter's, else its fixed input's.
        size = None if backbone.input_shape or converter is None or not converter.image_size else converter.image_size
        return Trunk(_cut(hub_backbone, backbone.cut_at, preset), converted(converter, None),
                     tuple(size) if size else fixed_size(hub_backbone),
                     PresetWriter(hub_backbone, converter, backbone.cut_at))

    def entries(self):
        image, _ = presets()
        return [Entry(source="keras_hub", name=name, family=family, input_size=size, params=params,
                      pretrained="preset")
                for name, (_, family, size, params) in image.items()]


def _cannot_load(preset, error):
    """Why a preset did not load, and what to do."""
    reason = first_line(str(error)) or type(error).__name__
    if is_local(preset):
        return (f"{preset} is not a KerasHub preset folder (config.json and model.weights.h5, as "
                f"`save_to_preset` writes them): {reason}")
    if not _is_network_failure(error):
        return f"cannot load the KerasHub preset {preset!r}: {reason}"
    folder = re.sub(r"\W+", "_", preset.split("://")[-1]).strip("_")
    download = (f"import keras_hub as h; p, d = {json.dumps(preset)}, {json.dumps(folder)}; "
                "h.models.Backbone.from_preset(p).save_to_preset(d); "
                "h.layers.ImageConverter.from_preset(p).save_to_preset(d)")
    return (f"cannot download the KerasHub preset {preset!r} (no network?): {reason}. On a machine with a "
            f"network, run: python -c {shlex.quote(download)}; then copy the folder {folder}/ beside the spec "
            f"and set backbone.preset to \"./{folder}\".")


# What the exceptions of a download that found no network are called
# (requests, urllib3, socket, huggingface_hub), or say.
_NETWORK_FAILURES = ("ConnectionError", "NameResolutionError", "MaxRetryError", "Timeout", "ConnectTimeout",
                     "gaierror", "OfflineModeIsEnabled", "URLError")
_NETWORK_WORDS = ("Failed to resolve", "Name or service not known", "Temporary failure in name resolution",
                  "Connection refused", "Network is unreachable", "Max retries exceeded")


def _is_network_failure(error):
    """Whether `error`, or one it came from, is a download finding no network."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if any(type(error).__name__.endswith(name) for name in _NETWORK_FAILURES) or any(
                words in str(error) for words in _NETWORK_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def converted(converter, image_size, scale_offset=None):
    """A copy of an image converter that resizes as zoo's input pipeline
    does (bilinear, the whole image squeezed) to `image_size` (None: it
    only rescales, the pipeline having resized already) and, given
    `scale_offset`, rescales by it instead."""
    if converter is None:
        return None
    config = {**converter.get_config(), "image_size": image_size, "interpolation": "bilinear",
              "antialias": False, "crop_to_aspect_ratio": False}
    if scale_offset is not None:
        config["scale"], config["offset"] = scale_offset
    return type(converter).from_config(config)


def _cut(backbone, cut_at, preset):
    """The backbone ending at its feature output, the layer `cut_at`, or
    its pyramid level `cut_at` ("P4")."""
    import keras

    names = {layer.name for layer in backbone.layers}
    if cut_at is not None and PYRAMID_LEVEL.fullmatch(cut_at) and cut_at not in names:
        levels = getattr(backbone, "pyramid_outputs", None) or {}
        if cut_at not in levels:
            has = f"its levels are {', '.join(levels)}" if levels else "it has no feature pyramid; cut at a layer"
            raise SpecError([("$.backbone.cut_at", f"no pyramid level {cut_at!r} in {preset} "
                                                   f"({type(backbone).__name__}): {has}")])
        return keras.Model(backbone.inputs, levels[cut_at], name=backbone.name)
    if cut_at is None and keras.tree.is_nested(backbone.output):
        raise SpecError([("$.backbone.cut_at", f"{preset} has several outputs; give the layer or pyramid "
                                               "level the head goes on")])
    return cut(backbone, cut_at, "$.backbone.cut_at", preset)


class PresetWriter:
    """Saves a network fine-tuned from a KerasHub backbone as a preset folder
    that `keras_hub.models.ImageClassifier.from_preset(folder)` loads.

    That needs the network in the form of the backbone family's KerasHub
    classifier: the backbone's whole output, pooled, dropout, one Dense
    layer; `problem(head)` says when it is not.
    """

    def __init__(self, backbone, converter, cut_at):
        self.backbone, self.converter, self.cut_at = backbone, converter, cut_at
        tasks = [task for task in classifier_classes() if task.backbone_cls is type(backbone)]
        self.task = tasks[0] if tasks else None

    def problem(self, head):
        """Why a network with `head` has no KerasHub classifier form; None if it has."""
        if self.task is None:
            return f"KerasHub has no image classifier for {type(self.backbone).__name__}"
        name = self.task.__name__
        if self.cut_at is not None:
            return f"the backbone is cut at {self.cut_at!r}; {name} takes its whole output"
        if self._head_owner() not in _CLASSIFIER_POOLING:
            return f"{name} has a head of its own, not pooling, dropout and one Dense layer"
        if head.hidden:
            return f"the head has hidden layers; {name} has one Dense layer"
        if self._pooling(head) is None:
            return f"{name} has no {head.pooling!r} pooling"
        return None

    def _head_owner(self):
        """The class whose __init__ builds the classifier's head."""
        return next(cls for cls in self.task.__mro__ if "__init__" in cls.__dict__).__name__

    def _pooling(self, head):
        return _CLASSIFIER_POOLING.get(self._head_owner(), {}).get(head.pooling)

    def write(self, network, head, class_names, image_size, scale_offset, folder):
        """Save `network` (whose head is `head`) in `folder`, with its class
        names in `class_names.json`. Its image converter takes [0, 255]
        pixels to what the network was trained on: it resizes to
        `image_size` and rescales by `scale_offset` (`(scale, offset)`, or
        None for the preset converter's own)."""
        converter = self.converter or self.task.preprocessor_cls.image_converter_cls()
        converter = converted(converter, tuple(image_size), scale_offset)
        backbone = self.backbone
        if backbone.dtype_policy.name != "float32":
            # KerasHub 0.32 cannot load a preset saved under mixed precision: save a float32 copy.
            backbone = type(backbone).from_config({**backbone.get_config(), "dtype": "float32"})
            backbone.set_weights(self.backbone.get_weights())
        classifier = self.task(backbone=backbone, num_classes=head.classes,
                               preprocessor=self.task.preprocessor_cls(image_converter=converter),
                               pooling=self._pooling(head), dropout=head.dropout,
                               activation="softmax" if head.activation == "softmax" else None,
                               head_dtype="float32")  # as the zoo head, also under mixed precision
        classifier.output_dense.set_weights(network.layers[-1].get_weights())
        classifier.save_to_preset(folder)
        with open(os.path.join(folder, CLASS_NAMES), "w") as f:
            json.dump(list(class_names), f, indent=1)


@functools.lru_cache(maxsize=1)
def classifier_classes():
    """KerasHub's image classifiers of one backbone family each."""
    import keras_hub

    return [cls for cls in _public_classes()
            if issubclass(cls, keras_hub.models.ImageClassifier) and getattr(cls, "backbone_cls", None)]


def _public_classes():
    import keras_hub

    return [cls for cls in vars(keras_hub.models).values() if isinstance(cls, type)]


if __name__ == "__main__":
    write_presets_table()
