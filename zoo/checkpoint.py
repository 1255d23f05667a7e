"""The resume checkpoint of a run: its last finished epoch, written atomically."""

import glob
import json
import os
import shutil

import numpy as np

from callbacks._files import leftovers, write_atomically
from callbacks._training_state import seed_states

STATE = "state.json"


class Checkpoint:
    """The last finished epoch of a run, kept in `directory`.

    `epoch-NNNN.weights.h5` holds the model's weights and its optimizer's
    variables (slots and iteration count), `best-NNNN.weights.h5` the best
    weights so far (a copy of the run's `best.weights.h5`, which may run
    ahead of the checkpoint), and `state.json` the rest (the run's
    position, its callbacks' progress, the random-seed states of layers such
    as Dropout) and the names of those files. `state.json` is replaced last,
    in one rename, so a crash at any moment leaves either the previous
    checkpoint or the new one, whole. Only the last one is kept.
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self.state_path = os.path.join(self.directory, STATE)

    def load(self):
        """The saved state (a dict), or None when there is none."""
        if not os.path.exists(self.state_path):
            return None
        with open(self.state_path) as f:
            return json.load(f)

    def save(self, model, state, best_path, best_improved):
        """Write `model`'s variables and `state` as the new checkpoint, with
        the best weights in `best_path` when they improved this epoch."""
        os.makedirs(self.directory, exist_ok=True)
        epoch = state["epoch"]
        weights = f"epoch-{epoch:04d}.weights.h5"
        write_atomically(os.path.join(self.directory, weights), model.save_weights)
        best = (self.load() or {}).get("best_weights")
        if best_improved:
            best = f"best-{epoch:04d}.weights.h5"
            write_atomically(os.path.join(self.directory, best), lambda path: shutil.copyfile(best_path, path))
        self._write_state({**state, "weights": weights, "best_weights": best,
                           "seed_states": [np.asarray(v).tolist() for v in seed_states(model)]})
        # Older checkpoints, and files of a write that a crash cut short.
        for stale in glob.glob(os.path.join(self.directory, "*.weights.h5")) + leftovers(self.directory):
            if os.path.basename(stale) not in (weights, best):
                os.remove(stale)

    def update(self, **changes):
        """Rewrite the saved state with `changes` (e.g. `finished=True`)."""
        os.makedirs(self.directory, exist_ok=True)
        self._write_state({**(self.load() or {}), **changes})

    def restore(self, model, state, best_path):
        """Load the checkpoint's variables into `model`, which must be
        compiled as it was when the checkpoint was written, and put its best
        weights back in `best_path`."""
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.directory, state["weights"]))
        for variable, value in zip(seed_states(model), state["seed_states"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        if state["best_weights"]:
            saved = os.path.join(self.directory, state["best_weights"])
            write_atomically(best_path, lambda path: shutil.copyfile(saved, path))

    def _write_state(self, state):
        text = json.dumps(state, indent=1)
        write_atomically(self.state_path, lambda path: _write_text(path, text))


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
