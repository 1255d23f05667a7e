"""What the zoo callbacks cost a real backbone on an accelerator, against a bare `model.fit`.

What it measures: `keras.applications.ResNet50` (random weights) at 224x224,
batch 128, 40 steps an epoch on one batch of random images kept on the device
(no input pipeline: the step alone), SGD with momentum, on the JAX backend.
Four configurations are built and compiled once, then fitted in turn for
`--rounds` rounds of `--epochs` epochs, each fit with fresh callbacks:

- bare `model.fit`;
- + `CaffeLR("step")`, `PlateauDecay` and `BestWeights` (watching the loss,
  which improves at every epoch, so the best weights are copied every epoch);
- the layerwise SGD of `zoo.optimizers` (trunk at `lr_mult` 0.1, the head at
  10) with the same callbacks;
- the LR set from Python before every batch, the hand-written way (on JAX
  the assignment does not even reach the compiled step without a state
  sync: this row times only the per-batch round trip).

"median epoch" is the median over every epoch but the first of each fit;
"first epoch" is the median first epoch of the fits after the warm-up one
(a repeated `fit`: in each round the callbacks are new, the model is not).
Ratios are to the bare configuration's, measured side by side in this run.
Targets (issue 12): every ratio at most 1.02, and a repeated fit's first
epoch within 1.1x of a bare one's.

It runs without TensorFlow (Keras from a wheel next to JAX is enough) and
says so at the end. On a CPU, make it small:

    python bench/gpu.py                                          # the GPU table
    python bench/gpu.py --image-size 32 --batch 8 --steps 5 --rounds 2 --epochs 3   # a CPU smoke run
"""

import argparse
import os
import statistics
import sys

os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from _common import EpochTimer, processor  # noqa: E402
from callbacks import BestWeights, CaffeLR, PlateauDecay  # noqa: E402
from zoo.optimizers import make_optimizer  # noqa: E402

CLASSES = 10


class PerBatchAssign(keras.callbacks.Callback):
    """The hand-written alternative: set the LR from Python before each batch."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_train_batch_begin(self, batch, logs=None):
        iteration = int(self.model.optimizer.iterations.numpy())
        self.model.optimizer.learning_rate = self.schedule.lr_at(iteration)


def network(image_size):
    # Random weights, unseeded: keras.utils.set_random_seed would import TensorFlow where it is installed.
    trunk = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    features = keras.layers.GlobalAveragePooling2D(name="head_pool")(trunk.output)
    outputs = keras.layers.Dense(CLASSES, name="head_fc")(features)
    return keras.Model(trunk.input, outputs)


def zoo_callbacks(steps):
    return [CaffeLR("step", base_lr=0.01, gamma=0.5, stepsize=2 * steps),
            PlateauDecay(monitor="loss", patience=2, verbose=0),
            BestWeights(monitor="loss", verbose=0)]


def configurations(image_size, steps):
    def sgd(model):
        return keras.optimizers.SGD(0.01, momentum=0.9)

    def layerwise(model):
        head = {v.path for name in ("head_fc",) for v in model.get_layer(name).weights}
        lr_mult = {v.path: (10.0 if v.path in head else 0.1) for v in model.trainable_variables}
        return make_optimizer("sgd", 0.01, lr_mult=lr_mult, momentum=0.9)

    return {
        "bare model.fit, SGD": (sgd, lambda: []),
        "+ CaffeLR + PlateauDecay + BestWeights": (sgd, lambda: zoo_callbacks(steps)),
        "layerwise SGD (lr_mult) + the same callbacks": (layerwise, lambda: zoo_callbacks(steps)),
        "per-batch LR set from Python (by hand)": (
            sgd, lambda: [PerBatchAssign(CaffeLR("step", base_lr=0.01, gamma=0.5, stepsize=2 * steps))]),
    }


def batches(x, y):
    """The same device-resident batch, forever."""
    while True:
        yield x, y


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="steps an epoch")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="epochs a fit")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = jax.device_put(rng.normal(size=(args.batch, args.image_size, args.image_size, 3)).astype("float32"))
    y = jax.device_put(rng.integers(0, CLASSES, size=(args.batch,)).astype("int32"))
    configs = configurations(args.image_size, args.steps)
    models = {}
    for name, (optimizer, callbacks) in configs.items():
        model = network(args.image_size)
        model.compile(optimizer=optimizer(model), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        # The warm-up fit: compiling the step, not timed.
        model.fit(batches(x, y), steps_per_epoch=args.steps, epochs=1, callbacks=callbacks(), shuffle=False,
                  verbose=0)
        models[name] = model
        print(f"compiled: {name}", flush=True)

    steady = {name: [] for name in configs}
    first = {name: [] for name in configs}
    names = list(configs)
    for round_index in range(args.rounds):
        shift = round_index % len(names)  # no configuration always runs first
        for name in names[shift:] + names[:shift]:
            timer = EpochTimer()
            models[name].fit(batches(x, y), steps_per_epoch=args.steps, epochs=args.epochs,
                             callbacks=configs[name][1]() + [timer], shuffle=False, verbose=0)
            first[name].append(timer.seconds[0])
            steady[name] += timer.seconds[1:]
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    device = jax.devices()[0]
    bare_name = names[0]
    bare, bare_first = statistics.median(steady[bare_name]), statistics.median(first[bare_name])
    print(f"\n{getattr(device, 'device_kind', device.platform)} ({device.platform}); keras {keras.__version__} "
          f"on jax {jax.__version__}; {processor()}")
    print(f"ResNet50 {args.image_size}x{args.image_size}, batch {args.batch}, {args.steps} steps an epoch; "
          f"{args.rounds} rounds x {args.epochs} epochs a fit, after one warm-up fit each")
    print(f"| {'configuration':<46} | median epoch | ratio to bare | first epoch of a repeated fit | ratio |")
    print(f"|{'-' * 48}|-------------:|--------------:|------------------------------:|------:|")
    for name in names:
        median, first_epoch = statistics.median(steady[name]), statistics.median(first[name])
        print(f"| {name:<46} | {median:>10.3f} s | {median / bare:>13.3f} | {first_epoch:>27.2f} s "
              f"| {first_epoch / bare_first:>5.2f} |")
    print(f"\nTensorFlow imported: {'yes' if 'tensorflow' in sys.modules else 'no'}")


if __name__ == "__main__":
    main()
