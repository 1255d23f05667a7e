"""`zoo train` on a keras.applications spec against hand-written Keras doing the same job, on this CPU.

What it measures: fine-tuning `MobileNetV3Small` at 96x96 (its weights read
from a file written here, as a pretrained backbone's would be) with a new
head (dropout 0.2, a dense layer of 10), on scikit-learn's digits (1438
training and 359 validation images, batch 32, 45 steps an epoch), SGD with
momentum 0.9 and Caffe's `step` policy, for `--epochs` epochs, two ways:

- `zoo.train(spec)`: the spec below, with the run folder it writes (spec,
  history and per-step LR CSVs, a checkpoint every epoch, the best weights,
  TensorBoard logs, `model.keras` and the plots);
- the same job written by hand: the same network and data split, a
  `tf.data` pipeline, `keras.optimizers.schedules.PiecewiseConstantDecay`,
  `EarlyStopping(restore_best_weights=True)`, `CSVLogger`, `BackupAndRestore`
  (a checkpoint every epoch), `ModelCheckpoint(save_best_only=True)`,
  `TensorBoard` and `model.save`.

Both run in this process, alternately (`--rounds` each, hand-written first
in odd rounds). "total" is the wall-clock time of the whole call, model
building and tracing included; "epoch" is the median epoch after the first
(timed by a callback passed to both). Ratios are zoo / hand-written, measured
side by side in this run. It runs on TensorFlow, as `zoo train` does.

    python bench/zoo_vs_keras.py [--epochs 4] [--rounds 2]
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from _common import EpochTimer, processor  # noqa: E402
from zoo.datasets import load_digits  # noqa: E402

SIZE, BATCH, CLASSES, SEED = 96, 32, 10, 0
BASE_LR, GAMMA, STEPSIZE = 0.01, 0.1, 90


def spec(weights, epochs):
    return {
        "name": "zoo_vs_keras", "seed": SEED,
        "backbone": {"name": "mobilenet_v3_small", "weights": weights, "input_shape": [SIZE, SIZE, 3]},
        "head": {"pooling": "avg", "dropout": 0.2, "classes": CLASSES,
                 "weight_filler": {"type": "gaussian", "std": 0.01},
                 "bias_filler": {"type": "constant", "value": 0}},
        "solver": {"optimizer": "sgd", "momentum": 0.9, "base_lr": BASE_LR, "lr_policy": "step",
                   "gamma": GAMMA, "stepsize": STEPSIZE, "batch_size": BATCH, "epochs": epochs,
                   "early_stopping": {"monitor": "val_accuracy", "patience": epochs}},
        "data": {"builtin": "digits", "image_size": [SIZE, SIZE], "channels": 3, "normalization": "none",
                 "validation_split": 0.2},
    }


def by_hand(weights, epochs, folder, timer):
    """The same fine-tuning, the way a Keras user writes it."""
    keras.utils.set_random_seed(SEED)
    trunk = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    trunk.load_weights(weights)
    features = keras.layers.GlobalAveragePooling2D()(trunk.output)
    features = keras.layers.Dropout(0.2)(features)
    outputs = keras.layers.Dense(CLASSES, activation="softmax",
                                 kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(features)
    model = keras.Model(trunk.input, outputs)
    (x, y), (x_val, y_val) = load_digits(validation_split=0.2, seed=SEED)

    def prepare(images, labels):
        images = tf.repeat(tf.image.resize(images, (SIZE, SIZE)), 3, axis=-1)
        return images, labels

    train = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=SEED).batch(BATCH)
             .map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    validation = (tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(BATCH)
                  .map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    steps = -(-len(x) // BATCH)
    boundaries = [STEPSIZE * k for k in range(1, epochs * steps // STEPSIZE + 2)]  # Caffe step: x gamma each STEPSIZE
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, [BASE_LR * GAMMA ** i for i in range(len(boundaries) + 1)])
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, validation_data=validation, epochs=epochs, shuffle=False, verbose=0, callbacks=[
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=epochs, restore_best_weights=True),
        keras.callbacks.CSVLogger(os.path.join(folder, "history.csv")),
        keras.callbacks.BackupAndRestore(os.path.join(folder, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(folder, "best.weights.h5"), monitor="val_accuracy",
                                        save_best_only=True, save_weights_only=True),
        keras.callbacks.TensorBoard(os.path.join(folder, "tensorboard")),
        timer,
    ])
    model.save(os.path.join(folder, "model.keras"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="zoo-vs-keras-")
    weights = os.path.join(work, "mobilenet_v3_small.weights.h5")
    keras.utils.set_random_seed(SEED)
    keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                        input_shape=(SIZE, SIZE, 3)).save_weights(weights)

    totals = {"hand-written Keras": [], "zoo train": []}
    steady = {name: [] for name in totals}  # every epoch but each run's first (which traces the step)
    for round_index in range(args.rounds):
        order = list(totals) if round_index % 2 == 0 else list(totals)[::-1]
        for name in order:
            keras.backend.clear_session()
            folder = os.path.join(work, f"{name.split()[0]}-{round_index}")
            os.makedirs(folder)
            timer = EpochTimer()
            start = time.perf_counter()
            if name == "zoo train":
                zoo.train(spec(weights, args.epochs), run_dir=folder, overwrite=True, callbacks=[timer], verbose=0)
            else:
                by_hand(weights, args.epochs, folder, timer)
            totals[name].append(time.perf_counter() - start)
            steady[name] += timer.seconds[1:]
            print(f"round {round_index + 1}/{args.rounds}: {name} {totals[name][-1]:.1f} s", flush=True)

    hand, zoo_run = "hand-written Keras", "zoo train"
    print(f"\n{processor()}; keras {keras.__version__} "
          f"on tensorflow {tf.__version__}; MobileNetV3Small {SIZE}x{SIZE}, batch {BATCH}, {args.epochs} epochs "
          f"of 45 steps, {args.rounds} runs each")
    print("| | total (median) | epoch after the first (median) |")
    print("|---|---:|---:|")
    for name in (hand, zoo_run):
        print(f"| {name} | {statistics.median(totals[name]):.1f} s | "
              f"{statistics.median(steady[name]):.2f} s |")
    print(f"| ratio zoo / hand-written | {statistics.median(totals[zoo_run]) / statistics.median(totals[hand]):.3f} "
          f"| {statistics.median(steady[zoo_run]) / statistics.median(steady[hand]):.3f} |")


if __name__ == "__main__":
    main()
