"""Hyperband vs an exhaustive grid over the same search space, on digits.

What it measures: `zoo tune` on scikit-learn's digits with `small_cnn`
(SGD, batch 32, 20% validation), searching base_lr in
{0.001, 0.003, 0.01, 0.03, 0.1, 0.3} x head dropout in {0, 0.25, 0.5} x
momentum in {0, 0.9} (36 combinations) for validation accuracy:

- grid: every combination trained for --max-epochs epochs;
- hyperband: keras-tuner's Hyperband with max_epochs = --max-epochs,
  factor 3, one iteration.

It prints, side by side from one run, each search's best validation accuracy,
its trials, and its compute as total epochs trained (Hyperband's resumed
trials count only the epochs they add). Target: Hyperband within 1 point of
the grid's best at a third of its epochs or less.

    python bench/tuning.py [--max-epochs 9]
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from zoo.tune import tune  # noqa: E402

SPACE = {
    "solver.base_lr": {"type": "choice", "values": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]},
    "head.dropout": {"type": "choice", "values": [0.0, 0.25, 0.5]},
    "solver.momentum": {"type": "choice", "values": [0.0, 0.9]},
}


def spec(search, epochs):
    return {
        "name": "tuning-bench",
        "seed": 0,
        "backbone": {"name": "small_cnn"},
        "head": {"classes": 10},
        "solver": {"base_lr": 0.01, "momentum": 0.9, "batch_size": 32, "epochs": epochs},
        "data": {"builtin": "digits", "validation_split": 0.2},
        "search": {"objective": "val_accuracy", "direction": "max", "seed": 0, "space": SPACE, **search},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=9)
    args = parser.parse_args()
    combinations = 6 * 3 * 2
    searches = {
        "grid": {"tuner": "grid", "max_trials": combinations},
        "hyperband": {"tuner": "hyperband", "max_epochs": args.max_epochs, "factor": 3},
    }
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, search in searches.items():
            result = tune(spec(search, args.max_epochs), directory=os.path.join(workdir, name), verbose=0)
            done = result.trials[result.trials["status"] == "COMPLETED"]
            rows[name] = (len(result.trials), int(done["epochs"].sum()), result.best_score)
            print(f"{name}: {rows[name]}", flush=True)

    grid_epochs, grid_best = rows["grid"][1], rows["grid"][2]
    print(f"\nsmall_cnn on digits, {combinations} combinations, up to {args.max_epochs} epochs a trial")
    print(f"{'search':<10} {'trials':>6} {'epochs':>7} {'epochs / grid':>14} {'best val_accuracy':>18} {'points below grid':>18}")
    for name, (trials, epochs, best) in rows.items():
        print(f"{name:<10} {trials:>6} {epochs:>7} {epochs / grid_epochs:>14.2f} {best:>18.4f} "
              f"{100 * (grid_best - best):>18.2f}")


if __name__ == "__main__":
    main()
