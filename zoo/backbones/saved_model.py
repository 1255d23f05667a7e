"""The `model` source: a saved `.keras` model (or a legacy `.h5` one), cut
at the layer `cut_at`, whose input preprocessing a spec may give
(`preprocessing`). Keras and h5py are imported when it is loaded."""

from zoo.backbones import BackboneSource, Trunk, cut, fixed_size, register_source
from zoo.errors import SpecError, first_line
from zoo.sections import Normalization


@register_source
class SavedModel(BackboneSource):
    """`{"model": "saved.keras", "cut_at": "layer_name"}`, and optionally
    the model's input preprocessing, which the file does not say:
    `"preprocessing": {"mean": m, "std": s}` (on [0, 1] pixels) or
    `{"scale": a, "offset": b}` (on [0, 255] pixels), each value a number
    or one per channel (`zoo.sections.Normalization`)."""

    key = "model"
    options = ("preprocessing",)
    has_preprocessing = False  # a saved model does not say how its inputs were scaled

    def preprocessing_error(self, backbone):
        if "preprocessing" in backbone:
            return None
        return ("a saved model does not say how its inputs were scaled: give it in `backbone.preprocessing`, "
                "{\"mean\", \"std\"} on [0, 1] pixels or {\"scale\", \"offset\"} on [0, 255] pixels")

    def errors(self, backbone, exists):
        errors = []
        if not exists(backbone["model"]):
            errors.append(("$.backbone.model", f"no such model file: {backbone['model']}"))
        if "cut_at" not in backbone:
            errors.append(("$.backbone.cut_at", "required with `model`: the layer the new head goes on"))
        if "preprocessing" in backbone:
            try:
                Normalization(**backbone["preprocessing"])
            except ValueError as error:
                errors.append(("$.backbone.preprocessing", str(error)))
        return errors

    def local_paths(self, backbone):
        return ["model"]

    def build(self, backbone, unsafe=False):
        saved = load_saved_model(backbone.model, unsafe)
        preprocess = None
        if backbone.preprocessing is not None:
            errors = backbone.preprocessing.channel_errors(saved.input_shape[-1], "$.backbone.preprocessing")
            if errors:
                raise SpecError(errors)
            preprocess = rescaling(*backbone.preprocessing.scale_and_offset())
        return Trunk(cut(saved, backbone.cut_at, "$.backbone.cut_at", backbone.model), preprocess,
                     image_size=fixed_size(saved))


def rescaling(scale, offset):
    """The preprocessing `pixels * scale + offset` of [0, 255] pixels, with
    `scale` and `offset` each a number or a tuple of one per channel."""

    def preprocess(pixels):
        return pixels * scale + offset

    return preprocess


def load_saved_model(path, unsafe=False):
    """The `.keras` (or legacy `.h5`) model in `path`, loaded without its
    training config. Keras's safe mode refuses Lambda layers, whose code
    would run on loading, unless `unsafe`."""
    import h5py
    import keras

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
