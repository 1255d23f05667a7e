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

    python bench/finetune_vs_scratch.py [--target 0.9] [--seeds 3] [--budget 300]
"""

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.train import build_model, train  # noqa: E402

TASK_A, TASK_B = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
EVERY = 5


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
    args = parser.parse_args()

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


def auto(spec, rule):
    spec["solver"].update(base_lr="auto", lr_finder={"rule": rule})
    return spec


def _machine():
    import platform

    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Keras "
            f"{keras.__version__} on {keras.backend.backend()}")


if __name__ == "__main__":
    main()
