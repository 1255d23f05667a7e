"""Per-epoch training time with each zoo LR callback, relative to a bare `model.fit`.

What it measures: `zoo.small_cnn` on scikit-learn's digits
(1438 training images, batch 32, 45 steps an epoch, SGD with momentum, no
validation; PlateauDecay and BestWeights watch the training loss), trained
in one process with each configuration in turn, for several interleaved rounds.
Each fit runs `--epochs` epochs; the first epoch of every fit (graph tracing)
is dropped and the rest are timed one by one. The ratio is
median(epoch time with the callbacks) / median(epoch time, bare fit).

A second bare configuration shows the noise floor: its ratio would be 1.000
on a quiet machine. For comparison it also times what people do by hand
without these callbacks:
setting the LR from Python before every batch (`per-batch assign`), which also
misses steps under `steps_per_execution > 1`.

    python bench/callback_overhead.py [--rounds 6] [--epochs 12]
"""

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from _common import EpochTimer  # noqa: E402
from callbacks import (  # noqa: E402
    BestWeights,
    CaffeLR,
    CyclicLR,
    DivergenceGuard,
    PlateauDecay,
    Warmup,
)
from zoo.datasets import load_digits  # noqa: E402
from zoo.small_cnn import small_cnn  # noqa: E402

BATCH = 32


class PerBatchAssign(keras.callbacks.Callback):
    """The hand-written alternative: set the LR from Python before each batch."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.schedule.lr_at(self.step)
        self.step += 1


def configurations(steps_per_epoch):
    def step():
        return CaffeLR("step", base_lr=0.05, gamma=0.5, stepsize=2 * steps_per_epoch)

    return {
        "bare": lambda: [],
        # The same bare fit again: its ratio shows this machine's noise floor.
        "bare (again)": lambda: [],
        "CaffeLR(step)": lambda: [step()],
        "CaffeLR(multistep)": lambda: [
            CaffeLR("multistep", base_lr=0.05, gamma=0.5, stepvalue=[50, 150, 250])
        ],
        "CyclicLR(triangular2)": lambda: [
            CyclicLR(0.005, 0.05, step_size=steps_per_epoch, mode="triangular2")
        ],
        "Warmup(CaffeLR)": lambda: [Warmup(step(), warmup_steps=steps_per_epoch)],
        "PlateauDecay": lambda: [PlateauDecay("loss", patience=2, verbose=0)],
        "all LR callbacks": lambda: [
            Warmup(step(), warmup_steps=steps_per_epoch),
            PlateauDecay("loss", patience=2, verbose=0),
        ],
        "BestWeights": lambda: [BestWeights("loss", verbose=0)],
        "DivergenceGuard": lambda: [DivergenceGuard(verbose=0)],
        "per-batch assign (by hand)": lambda: [PerBatchAssign(step())],
    }


def time_epochs(data, callbacks, epochs):
    (x, y), _ = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = small_cnn(x.shape[1:], classes=10)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    # No validation data: it would add its own timing noise to every epoch.
    model.fit(x, y, batch_size=BATCH, epochs=epochs, callbacks=callbacks + [timer], verbose=0)
    return timer.seconds[1:]  # epoch 0 includes tracing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()

    data = load_digits(validation_split=0.2, seed=0)
    steps_per_epoch = -(-len(data[0][0]) // BATCH)
    configs = configurations(steps_per_epoch)
    seconds = {name: [] for name in configs}
    names = list(configs)
    for round_index in range(args.rounds):
        # Rotate the order each round so that no configuration always runs first.
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name] += time_epochs(data, configs[name](), args.epochs)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    bare = statistics.median(seconds["bare"])
    print(f"\nkeras {keras.__version__}, backend {keras.backend.backend()}, "
          f"{os.cpu_count()} CPUs; {args.rounds} rounds x {args.epochs - 1} timed epochs "
          f"of {steps_per_epoch} steps each")
    print(f"{'configuration':<28} {'median epoch (ms)':>18} {'quartiles (ms)':>16} {'ratio to bare':>14}")
    for name, values in seconds.items():
        median = statistics.median(values)
        low, _, high = statistics.quantiles(values, n=4)
        quartiles = f"{1000 * low:.0f}-{1000 * high:.0f}"
        print(f"{name:<28} {1000 * median:>18.1f} {quartiles:>16} {median / bare:>14.3f}")


if __name__ == "__main__":
    main()
