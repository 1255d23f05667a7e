"""Iterations to a target accuracy: fine-tuning a pretrained network vs training from scratch.

What it measures: on scikit-learn's digits, the small CNN is pretrained on
digits 0-4 (task A), then four runs learn digits 5-9 (task B) with the same
architecture, data, batch size (32), solver (SGD, momentum 0.9, fixed LR) and
evaluation schedule (validation accuracy every 5 iterations):

- scratch: random initialization, every layer at lr_mult 1;
- fine-tune, one LR: task A's trunk and a new head, every layer at lr_mult 1;
- fine-tune, head 10x / trunk 0.1x: Caffe's recipe (lr_mult 10 on the new
  head, 0.1 on the transferred layers);
- frozen trunk: only the new head trains.

It prints the iterations each needed to first reach the target validation
accuracy on task B (median over seeds; "-" if not within --max-iter), all
measured side by side in one run. The classic report is 60% accuracy after
about 1,000 iterations fine-tuned vs about 4,000 from scratch (CIFAR-100 to
CIFAR-10, Caffe).

    python bench/finetune_vs_scratch.py [--target 0.9] [--seeds 3] [--max-iter 1500]
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


class ItersToTarget(keras.callbacks.Callback):
    """Evaluates every EVERY iterations; stops at the first hit of `target`."""

    def __init__(self, validation, target):
        super().__init__()
        self.validation, self.target = validation, target
        self.iterations = None

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % EVERY:
            return
        x, y = self.validation
        accuracy = np.mean(np.argmax(self.model.predict(x, verbose=0), axis=1) == y)
        if accuracy >= self.target:
            self.iterations = step
            self.model.stop_training = True


def iterations_to_target(spec, target, max_iter):
    from zoo.data import load_data
    from zoo.spec import load_spec

    spec = load_spec(spec)
    model = build_model(spec)  # its optimizer follows the solver's LR policy
    data = load_data(spec.data, spec.seed, channels=model.input_shape[-1])
    batch_size = spec.stages[0].solver.batch_size
    x_val = np.concatenate([x for x, _ in data.validation(batch_size)])
    y_val = np.concatenate([y for _, y in data.validation(batch_size)])
    stopper = ItersToTarget((x_val, y_val), target)
    steps = data.steps(batch_size)
    epochs = -(-max_iter // steps)
    model.fit(data.train(batch_size, 0, epochs), steps_per_epoch=steps, epochs=epochs, verbose=0,
              shuffle=False, callbacks=[stopper])
    return stopper.iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=1500)
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(args.seeds):
            pretrain = base_spec(seed, {"name": "small_cnn"}, base_lr=0.05)
            pretrain["data"]["classes"] = TASK_A
            pretrain["solver"].update(epochs=8, lr_policy="step", gamma=0.5, stepsize=100)
            run = train(pretrain, run_dir=os.path.join(workdir, f"a{seed}"), verbose=0)
            trunk = {"model": run.paths["model.keras"], "cut_at": "relu3"}
            configurations = {
                "scratch": base_spec(seed, {"name": "small_cnn"}),
                "fine-tune, one LR": base_spec(seed, trunk),
                "fine-tune, head 10x / trunk 0.1x": base_spec(
                    seed, trunk, slow=[{"match": "head_*", "lr_mult": 10}, {"match": "*", "lr_mult": 0.1}]),
                "frozen trunk": base_spec(seed, trunk, frozen=[{"up_to": "relu3"}]),
            }
            for name, spec in configurations.items():
                results.setdefault(name, []).append(iterations_to_target(spec, args.target, args.max_iter))
            print(f"seed {seed}: " + ", ".join(f"{k}={v[-1]}" for k, v in results.items()), flush=True)

    print(f"\nIterations to {args.target:.0%} validation accuracy on digits 5-9 "
          f"(batch 32, checked every {EVERY} iterations, {args.seeds} seeds, max {args.max_iter}):")
    print(f"{'configuration':<34} {'median':>8}   per seed")
    for name, values in results.items():
        reached = [v for v in values if v is not None]
        median = f"{statistics.median(reached):.0f}" if len(reached) == len(values) else "-"
        print(f"{name:<34} {median:>8}   {values}")


if __name__ == "__main__":
    main()
