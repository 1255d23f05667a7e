import json
import os
import shutil

import pytest

from zoo.train import train

SPECS = os.path.join(os.path.dirname(__file__), "..", "..", "specs")


@pytest.fixture(scope="session")
def spec_dir(tmp_path_factory):
    """A copy of specs/ whose relative paths work: digits_pretrain has been
    trained (briefly) into ../runs/digits_pretrain, as the README's first
    command does."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(SPECS, root / "specs")
    pretrain = json.loads((root / "specs" / "digits_pretrain.json").read_text())
    pretrain["solver"]["epochs"] = 2
    (root / "specs" / "digits_pretrain.json").write_text(json.dumps(pretrain))
    train(root / "specs" / "digits_pretrain.json", run_dir=root / "runs" / "digits_pretrain", verbose=0)
    return root / "specs"


def write_spec(directory, spec, name="spec.json"):
    path = directory / name
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def recorded_fits(monkeypatch):
    return record_fits(monkeypatch)


def record_fits(monkeypatch):
    """Replaces `keras.Model.fit` with a fit that trains nothing: it records
    what each fit was given (`fit_signature`) and runs its callbacks over
    its epochs with fixed logs. Returns the list of signatures."""
    import keras

    fits = []

    def fit(model, x=None, *, callbacks=(), epochs=1, initial_epoch=0, steps_per_epoch=None, **kwargs):
        fits.append(fit_signature(model, x, callbacks, epochs - initial_epoch, steps_per_epoch))
        callback_list = keras.callbacks.CallbackList(list(callbacks), model=model)
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            callback_list.on_epoch_end(epoch, {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5})
        callback_list.on_train_end()
        return keras.callbacks.History()

    monkeypatch.setattr(keras.Model, "fit", fit)
    return fits


def fit_signature(model, dataset, callbacks, epochs, steps):
    """What a `fit` gets from a stage: optimizer, LR at several steps, batch
    size, length, compile options, the zoo callbacks, trainable layers and
    BatchNormalization modes."""
    from callbacks import BestWeights, DivergenceGuard, PlateauDecay, PreciseBN, current_lr
    from zoo.batchnorm import batchnorm_layers

    config = model.optimizer.get_config()
    config.pop("name")
    zoo_callbacks = {type(c).__name__: {k: v for k, v in c.get_config().items() if k not in ("filepath", "verbose")}
                     for c in callbacks if isinstance(c, (BestWeights, DivergenceGuard, PlateauDecay, PreciseBN))}
    return {
        "optimizer": type(model.optimizer).__name__,
        "config": config,
        "lr": [current_lr(model, i) for i in (0, 3, 6, 9, 30, 150, 1000)],
        "batch_size": int(next(iter(dataset))[0].shape[0]),
        "epochs": epochs,
        "steps": steps,
        "jit_compile": model.jit_compile,
        "steps_per_execution": model.steps_per_execution,
        "callbacks": zoo_callbacks,
        "trainable": [layer.name for layer in model.layers if layer.trainable and layer.weights],
        # BatchNormalization layers: inference mode (their own `call`), momentum.
        "batchnorm": [(layer.name, "call" in vars(layer), layer.momentum) for layer in batchnorm_layers(model)],
    }


def save_tiny_resnet_preset(folder, image_size=(32, 32)):
    """A small KerasHub ResNet (random weights) and an ImageNet-style image
    converter, written with `save_to_preset` as a downloaded preset is: the
    offline stand-in for `resnet_18_imagenet`. Returns the folder."""
    from keras_hub.layers import ResNetImageConverter
    from keras_hub.models import ResNetBackbone

    backbone = ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
                              stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
                              use_pre_activation=False, image_shape=(None, None, 3))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    converter = ResNetImageConverter(image_size=image_size, scale=[1 / (255 * s) for s in std],
                                     offset=[-m / s for m, s in zip(mean, std)])
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory):
    return save_tiny_resnet_preset(tmp_path_factory.mktemp("presets") / "tiny_resnet")


def stop_after_one_epoch():
    """A callback that interrupts a `fit` as Ctrl-C would, when its second epoch begins."""
    import keras

    class StopAfterOneEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    return StopAfterOneEpoch()
