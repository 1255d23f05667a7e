"""The `model` source: a saved `.keras` model (or a legacy `.h5` one), cut
at the layer `cut_at`. Keras and h5py are imported when it is loaded."""

from zoo.backbones import BackboneSource, Trunk, cut, fixed_size, register_source
from zoo.errors import SpecError, first_line


@register_source
class SavedModel(BackboneSource):
    """`{"model": "saved.keras", "cut_at": "layer_name"}`."""

    key = "model"
    has_preprocessing = False  # a saved model does not say how its inputs were scaled

    def errors(self, backbone, exists):
        errors = []
        if not exists(backbone["model"]):
            errors.append(("$.backbone.model", f"no such model file: {backbone['model']}"))
        if "cut_at" not in backbone:
            errors.append(("$.backbone.cut_at", "required with `model`: the layer the new head goes on"))
        return errors

    def local_paths(self, backbone):
        return ["model"]

    def build(self, backbone, unsafe=False):
        saved = load_saved_model(backbone.model, unsafe)
        return Trunk(cut(saved, backbone.cut_at, "$.backbone.cut_at", backbone.model), image_size=fixed_size(saved))


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
