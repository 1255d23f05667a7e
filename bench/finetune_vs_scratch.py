"""Fine-tuning a pretrained network vs training from scratch, and base_lr "auto" vs the recipe's fixed LR.

What it measures: on scikit-learn's digits, the small CNN is pretrained on
digits 0-4 (task A), then each configuration learns digits 5-9 (task B)
with the same architecture, data, batch size (32), solver (SGD, momentum
0.9, fixed policy), budget (--budget iterations) and evaluation schedule
(validation accuracy every 5 iterations):

- scratch: random initialization, every layer at lr_mult 1, base_lr 0.01;
- fine-tune, one LR: task A's trunk and a new head, every layer at lr_mult 1;
- fine-tune, head 10x / trunk 0.1x: Caffe's recipe (lr_mult 10 on the new
  head, 0.1 on the transferred layers), at the fixed base_lr 0.01;
- the same recipe at base_lr "auto", once for each rule of the LR range
  test (valley, steep, minimum): the test's 100 sweep steps run first, on
  the same model, and are not counted in the budget;
- frozen trunk: only the new head trains.

It prints, for each, the iterations to first reach the target validation
accuracy on task B (median over seeds; "-" if a seed does not within the
budget), the validation accuracy at the end of the budget (mean over
seeds) and the base LR used, all measured side by side in one run. The
classic report is 60% accuracy after about 1,000 iterations fine-tuned vs
about 4,000 from scratch (CIFAR-100 to CIFAR-10, Caffe).

Then, BatchNorm on small data: the small CNN with Keras's default
BatchNorm momentum (0.99) in every run, pretrained on digits 0-4 (its
statistics recomputed at the end), and task B cut to 20 training images per
class (500 others for validation), batch 16, 20 epochs (140 iterations):

- the README's recipe, `specs/digits_small_data.json` (BatchNorm in
  inference mode, head 10x / trunk 0.1x, base_lr "auto" (steep), stepvalue
  at 60% and 85% of the run), and the same with BatchNorm in train mode;
- the fine-tune written by hand in Keras (new head, every layer at one LR,
  SGD 0.01, momentum 0.9, BatchNorm as Keras runs it), with its validation
  accuracy before and after `callbacks.recompute_batchnorm` (the running
  statistics recomputed over the training images);
- training from scratch (the recipe's solver at the pretraining's fixed
  base_lr 0.05, every layer at lr_mult 1, BatchNorm in train mode),
  without and with `recompute: "epoch"`.

It prints the validation accuracy after the last iteration (mean and
per seed).

    python bench/finetune_vs_scratch.py [--target 0.9] [--seeds 3] [--budget 300] [--part lr|batchnorm|all]
"""

import argparse
import copy
import json
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from callbacks import recompute_batchnorm  # noqa: E402
from zoo.datasets import load_digits  # noqa: E402
from zoo.train import build_model, train  # noqa: E402

TASK_A, TASK_B = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
EVERY = 5
RECIPE = os.path.join(os.path.dirname(__file__), "..", "specs", "digits_small_data.json")
# Keras's default BatchNorm momentum (small_cnn's own is 0.9): running
# statistics of about the last 100 steps.
MOMENTUM = 0.99


def base_spec(seed, backbone, slow=(), frozen=(), base_lr=0.01):
    return {
        "seed": seed,
        "backbone": backbone,
        "head": {"classes": 5, "weight_filler": {"type": "gaussian", "std": 0.01}},
        "slow": list(slow),
        "frozen": list(frozen),
        "solver": {"base_lr": base_lr, "momentum": 0.9, "batch_size": 32, "epochs": 1},
        "data": {"builtin": "digits", "classes": TASK_B},
    }


class FirstHit(keras.callbacks.Callback):
    """Evaluates every EVERY iterations; records the first to reach `target`
    and the accuracy at the end."""

    def __init__(self, validation, target):
        super().__init__()
        self.validation, self.target = validation, target
        self.iterations = None
        self.accuracy = None

    def _accuracy(self):
        x, y = self.validation
        return float(np.mean(np.argmax(self.model.predict(x, verbose=0), axis=1) == y))

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.iterations is None and step % EVERY == 0 and self._accuracy() >= self.target:
            self.iterations = step

    def on_train_end(self, logs=None):
        self.accuracy = self._accuracy()


def measure(spec, target, budget):
    """`(iterations to target or None, final validation accuracy, base LR)`
    of `budget` iterations of the spec's first stage."""
    from callbacks import current_lr
    from zoo.data import load_data
    from zoo.spec import load_spec

    spec = load_spec(spec)
    model = build_model(spec)  # its optimizer follows the solver's LR policy; "auto" is found first
    base_lr = current_lr(model, 0)
    data = load_data(spec.data, spec.seed, channels=model.input_shape[-1])
    batch_size = spec.stages[0].solver.batch_size
    x_val = np.concatenate([x for x, _ in data.validation(batch_size)])
    y_val = np.concatenate([y for _, y in data.validation(batch_size)])
    hit = FirstHit((x_val, y_val), target)
    steps = data.steps(batch_size)
    epochs = -(-budget // steps)
    # Whole epochs, then stopped at the budget: every configuration takes `budget` steps.
    stop = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: setattr(
        model, "stop_training", int(keras.ops.convert_to_numpy(model.optimizer.iterations)) >= budget))
    model.fit(data.train(batch_size, 0, epochs), steps_per_epoch=steps, epochs=epochs, verbose=0,
              shuffle=False, callbacks=[stop, hit])
    return hit.iterations, hit.accuracy, base_lr


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=300, help="training iterations of every configuration")
    parser.add_argument("--part", choices=["lr", "batchnorm", "all"], default="all",
                        help="the learning-rate comparison, the BatchNorm one on small data, or both")
    args = parser.parse_args()
    if args.part in ("lr", "all"):
        learning_rate_part(args)
    if args.part in ("batchnorm", "all"):
        results, iterations = batchnorm_part(args.seeds)
        print(f"\nBatchNorm on small data: digits 5-9, 20 training images per class, 500 for validation, "
              f"{iterations} iterations of batch 16, BatchNorm momentum {MOMENTUM} "
              f"({args.seeds} seeds), {_machine()}:")
        print(f"{'configuration':<48} {'final':>7}   per seed")
        for name, accuracy in results.items():
            print(f"{name:<48} {statistics.mean(accuracy):>7.1%}   {', '.join(f'{a:.1%}' for a in accuracy)}")


def learning_rate_part(args):
    """The first comparison: the table of iterations to `args.target`."""
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(args.seeds):
            pretrain = base_spec(seed, {"name": "small_cnn"}, base_lr=0.05)
            pretrain["data"]["classes"] = TASK_A
            pretrain["solver"].update(epochs=8, lr_policy="step", gamma=0.5, stepsize=100)
            run = train(pretrain, run_dir=os.path.join(workdir, f"a{seed}"), verbose=0)
            trunk = {"model": run.paths["model.keras"], "cut_at": "relu3"}
            recipe = [{"match": "head_*", "lr_mult": 10}, {"match": "*", "lr_mult": 0.1}]
            configurations = {
                "scratch": base_spec(seed, {"name": "small_cnn"}),
                "fine-tune, one LR": base_spec(seed, trunk),
                "fine-tune, head 10x / trunk 0.1x": base_spec(seed, trunk, slow=recipe),
                **{f"the same, base_lr auto ({rule})": auto(base_spec(seed, trunk, slow=recipe), rule)
                   for rule in ("valley", "steep", "minimum")},
                "frozen trunk": base_spec(seed, trunk, frozen=[{"up_to": "relu3"}]),
            }
            for name, spec in configurations.items():
                results.setdefault(name, []).append(measure(spec, args.target, args.budget))
            print(f"seed {seed}: " + ", ".join(f"{k}={v[-1][0]}" for k, v in results.items()), flush=True)

    print(f"\n{args.budget} iterations on digits 5-9 (batch 32, validation accuracy checked every {EVERY} "
          f"iterations, {args.seeds} seeds), {_machine()}:")
    print(f"{'configuration':<38} {'to ' + format(args.target, '.0%'):>8} {'final':>7} {'base_lr':>9}   "
          "iterations per seed")
    for name, values in results.items():
        iterations, accuracy, lr = zip(*values)
        reached = [v for v in iterations if v is not None]
        median = f"{statistics.median(reached):.0f}" if len(reached) == len(values) else "-"
        print(f"{name:<38} {median:>8} {statistics.mean(accuracy):>7.1%} {statistics.median(lr):>9.3g}   "
              f"{list(iterations)}")


def batchnorm_part(seeds):
    """The BatchNorm comparison on small data: `{configuration: [final
    validation accuracy per seed]}`."""
    with open(RECIPE) as f:
        recipe = json.load(f)
    solver, data = recipe["solver"], recipe["data"]
    iterations = solver["epochs"] * -(-len(data["classes"]) * data["per_class"] // solver["batch_size"])
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(seeds):
            pretrain = base_spec(seed, {"name": "small_cnn"}, base_lr=0.05)
            pretrain["data"]["classes"] = TASK_A
            # The statistics recomputed at the end, as a long pretraining has them right.
            pretrain["batchnorm"] = {"momentum": MOMENTUM, "recompute": True}
            pretrain["solver"].update(epochs=8, lr_policy="step", gamma=0.5, stepsize=100)
            trunk = train(pretrain, run_dir=os.path.join(workdir, f"a{seed}"), verbose=0).paths["model.keras"]

            def zoo_run(name, backbone, **fields):
                spec = copy.deepcopy({**recipe, "seed": seed, "backbone": backbone, **fields})
                history = train(spec, run_dir=os.path.join(workdir, f"{name}{seed}"), verbose=0).history
                return float(history["val_accuracy"].iloc[-1])  # the last epoch's, not the best

            # At the pretraining's fixed LR: an LR range test of a random network on 100 images finds none.
            scratch = {"backbone": {"name": "small_cnn"}, "slow": [], "batchnorm": {"momentum": MOMENTUM},
                       "solver": {**{k: v for k, v in solver.items() if k != "lr_finder"}, "base_lr": 0.05}}
            stale, recomputed = hand_written(trunk, seed, data, solver)
            for name, accuracy in {
                "recipe": zoo_run("recipe", {"model": trunk, "cut_at": "relu3"}),
                "recipe, BatchNorm in train mode": zoo_run("train", {"model": trunk, "cut_at": "relu3"},
                                                           batchnorm={"mode": "train", "momentum": MOMENTUM}),
                "hand-written Keras fine-tune": stale,
                "the same, BatchNorm recomputed": recomputed,
                "from scratch": zoo_run("scratch", **scratch),
                "from scratch, BatchNorm recomputed every epoch": zoo_run(
                    "scratch_recomputed", **{**scratch, "batchnorm": {"momentum": MOMENTUM, "recompute": "epoch"}}),
            }.items():
                results.setdefault(name, []).append(accuracy)
            print(f"seed {seed}: " + ", ".join(f"{k}={v[-1]:.3f}" for k, v in results.items()), flush=True)
    return results, iterations


def hand_written(trunk_path, seed, data, solver):
    """The fine-tune as written by hand in Keras: the trunk, a new head, SGD
    at one LR, `fit` for the recipe's epochs. Returns the validation
    accuracy at the end, before and after its BatchNorm statistics are
    recomputed."""
    keras.utils.set_random_seed(seed)
    (x, y), (x_val, y_val) = load_digits(seed=seed, classes=data["classes"], per_class=data["per_class"],
                                         validation_count=data["validation_count"])
    saved = keras.saving.load_model(trunk_path, compile=False)
    for layer in saved.layers:  # as keras.layers.BatchNormalization() builds them
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = MOMENTUM
    features = keras.layers.GlobalAveragePooling2D()(saved.get_layer("relu3").output)
    outputs = keras.layers.Dense(len(data["classes"]), activation="softmax")(keras.layers.Dropout(0.2)(features))
    model = keras.Model(saved.inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    batch = solver["batch_size"]
    model.fit(x, y, batch_size=batch, epochs=solver["epochs"], verbose=0)
    stale = model.evaluate(x_val, y_val, verbose=0)[1]
    recompute_batchnorm(model, [x[i:i + batch] for i in range(0, len(x), batch)])
    return stale, model.evaluate(x_val, y_val, verbose=0)[1]


def auto(spec, rule):
    spec["solver"].update(base_lr="auto", lr_finder={"rule": rule})
    return spec


def _machine():
    import platform

    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Keras "
            f"{keras.__version__} on {keras.backend.backend()}")


if __name__ == "__main__":
    main()
