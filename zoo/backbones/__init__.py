"""The backbone registry: where a spec's pretrained trunk comes from.

A source is one way to get a trunk, registered under the `backbone` key that
selects it (timm's `register_model`, one level up):

| spec key | source | module |
|---|---|---|
| `name` | a `keras.applications` model (or `small_cnn`) | `zoo.backbones.applications` |
| `model` | a saved `.keras` model | `zoo.backbones.saved_model` |
| `preset` | a KerasHub preset: a name, a `kaggle://` or `hf://` handle, a folder | `zoo.backbones.kerashub` |

Each source checks its part of the spec (`errors`), names the keys that hold
local paths (`local_paths`), builds the `Trunk` (`build`) and lists what it
offers (`entries`, for `zoo list`). Every source cuts its model at a layer
the same way (`cut`): at its feature output by default, or at the layer
`cut_at` (a KerasHub backbone also at a pyramid level). Adding a source is
one module with one `@register_source` class; the rest of the package asks
only what the source knows (`preprocessing_error`, the `Trunk`), never which
source a spec uses.

Checking a spec's `backbone` section and listing the backbones import
neither Keras nor KerasHub, so `zoo list` and `zoo validate --quick` do not
load TensorFlow: `errors` and `entries` read static tables of what a source
offers, and a source imports Keras when it builds a trunk.
"""

import dataclasses
import difflib
import fnmatch
from typing import TYPE_CHECKING, Callable, Optional

from zoo.errors import SpecError, json_path

if TYPE_CHECKING:
    import keras

SOURCES = {}  # spec key -> its BackboneSource


@dataclasses.dataclass(frozen=True)
class Entry:
    """One backbone a source offers: a row of `zoo list`.

    Attributes:
        source: `keras.applications`, `keras_hub` or `zoo`.
        name: What the spec's key takes (`backbone.name` or `backbone.preset`).
        family: The architecture family (`resnet`, `efficientnet`, ...).
        input_size: `(height, width)` it was trained at, or None if unknown.
        params: Parameters without the classifier, or None if unknown.
        pretrained: Where its pretrained weights come from: `imagenet`
            (`backbone.weights`), `preset` (the preset's own), or "" (none).
    """

    source: str
    name: str
    family: str
    input_size: Optional[tuple]
    params: Optional[int]
    pretrained: str = ""


@dataclasses.dataclass
class Trunk:
    """A built backbone, ready for a head.

    Attributes:
        model: A functional `keras.Model` whose output is where the head goes.
        preprocess: The backbone's own input preprocessing, applied to
            batches of [0, 255] pixels (`data.normalization: "backbone"`),
            or None when the source has none.
        image_size: The `(height, width)` the backbone takes (a preset's
            image converter's, else its input's), which `data.image_size`
            defaults to; None when the input size is not fixed.
        preset_writer: For a KerasHub trunk, the `PresetWriter` that saves
            the fine-tuned network as a KerasHub preset folder; None for
            other sources.
        pretrained: Whether the trunk holds trained weights (False for a
            registry model built without weights), which sets the default
            BatchNormalization mode (`zoo.batchnorm`).
    """

    model: "keras.Model"
    preprocess: Optional[Callable] = None
    image_size: Optional[tuple] = None
    preset_writer: Optional[object] = None
    pretrained: bool = True


class BackboneSource:
    """One way to get a trunk; subclasses are registered with `register_source`."""

    key = None  # the `backbone` key that selects this source
    # Keys this source accepts besides `key` and `cut_at`.
    options = ()
    # Whether its backbones know their input preprocessing (`normalization:
    # "backbone"`); where they do not, `preprocessing_error` may say how a
    # spec tells it.
    has_preprocessing = True

    def preprocessing_error(self, backbone):
        """Why the JSON `backbone` section does not know its input
        preprocessing, which `data.normalization: "backbone"` needs; None
        when it knows it."""
        return None if self.has_preprocessing else f"a `{self.key}` backbone does not know it"

    def errors(self, backbone, exists):
        """`(json_path, message)` for what is wrong in the JSON `backbone`
        section, without building anything. `exists(path, folder=False)`
        says whether a path of the spec is a file (or folder)."""
        return []

    def local_paths(self, backbone):
        """The keys of the JSON `backbone` section that hold local paths."""
        return []

    def build(self, backbone, unsafe=False):
        """The `Trunk` of a `zoo.sections.Backbone`; a problem is a `SpecError`."""
        raise NotImplementedError

    def entries(self):
        """The `Entry` of every backbone this source can name."""
        return []


def register_source(cls):
    """Class decorator: make `cls` the source of its `key`."""
    SOURCES[cls.key] = cls()
    return cls


def given_sources(backbone):
    """The source keys set in a JSON `backbone` section."""
    return [key for key in SOURCES if key in backbone]


def source_for(backbone):
    """The source of a `zoo.sections.Backbone` (or a validated JSON section)."""
    get = backbone.get if isinstance(backbone, dict) else lambda key: getattr(backbone, key)
    return next(source for key, source in SOURCES.items() if get(key) is not None)


def backbone_errors(backbone, exists):
    """The errors of a JSON `backbone` section: exactly one source, the
    keys that source accepts, and that source's own checks."""
    keys = given_sources(backbone)
    if len(keys) != 1:
        choices = ", ".join(f"`{key}`" for key in SOURCES)
        return [("$.backbone", f"give exactly one of {choices}; got {', '.join(keys) or 'none'}")]
    source = SOURCES[keys[0]]
    allowed = {source.key, "cut_at", *source.options}
    errors = [(json_path(["backbone", key]), f"not with `{source.key}`; it takes "
                                             f"{', '.join(sorted(allowed - {source.key}))}")
              for key in backbone if key not in allowed]
    return errors + source.errors(backbone, exists)


def build_trunk(backbone, unsafe=False):
    """The `Trunk` of a `zoo.sections.Backbone`, from its source."""
    return source_for(backbone).build(backbone, unsafe)


def fixed_size(model):
    """The `(height, width)` of `model`'s image input, or None if not fixed."""
    size = tuple(model.input_shape[1:3])
    return None if None in size else size


def cut(model, layer, where, of):
    """`model` as a functional model ending at the output of its layer
    `layer` (None: at its own output). An unknown layer is a `SpecError` at
    `where` naming the closest layers of `of` (the model's description)."""
    if layer is None:
        return model
    import keras

    names = [item.name for item in model.layers]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=3)
        raise SpecError([(where, f"no layer {layer!r} in {of}; close: {', '.join(close) or 'none'} "
                                 f"({len(names)} layers)")])
    return keras.Model(model.inputs, model.get_layer(layer).output, name=model.name)


def list_backbones(pattern=None, source=None):
    """Every backbone the registry can name, as `Entry` rows sorted by
    source and name.

    Args:
        pattern: Part of the name, ignoring case, `_` and `-`, or a glob
            when it holds `*`, `?` or `[`. None lists all.
        source: Only this source's entries (`keras.applications`,
            `keras_hub` or `zoo`).
    """
    entries = [entry for registered in SOURCES.values() for entry in registered.entries()]
    known = sorted({entry.source for entry in entries})
    if source is not None and source not in known:
        raise ValueError(f"Unknown source {source!r}; the sources are {', '.join(known)}.")
    pattern = (pattern or "").lower()
    if any(char in pattern for char in "*?["):
        matches = lambda name: fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(plain_name(name), plain_name(pattern))
    else:
        matches = lambda name: plain_name(pattern) in plain_name(name)
    return sorted((entry for entry in entries
                   if (source is None or entry.source == source) and matches(entry.name.lower())),
                  key=lambda entry: (entry.source, entry.name))


def plain_name(name):
    """A name without case, `_` or `-`: `MobileNet_V3-Small` is `mobilenetv3small`."""
    return name.lower().replace("_", "").replace("-", "")


# The sources register themselves on import, in the order errors name them.
from zoo.backbones import applications, saved_model, kerashub  # noqa: E402,F401,I001
from zoo.backbones.applications import get_backbone  # noqa: E402,F401
