"""A callback whose progress can be saved and resumed (PlateauDecay, BestWeights)."""

import keras


class ResumableCallback(keras.callbacks.Callback):
    """Keeps the attributes named in `STATE` as a JSON-able dict.

    Subclasses reset their progress in `_reset()`; `on_train_begin` resets
    it, then applies a state given with `set_state`, so one instance can be
    reused across fits and a resumed run carries on where it stopped.
    """

    STATE = ()

    def __init__(self):
        super().__init__()
        self._pending_state = None
        self._reset()

    def _reset(self):
        raise NotImplementedError

    def get_state(self):
        """The callback's progress as a JSON-able dict, for checkpoints."""
        return {name: getattr(self, name) for name in self.STATE}

    def set_state(self, state):
        """Resume from `get_state()`'s dict at the next `on_train_begin`."""
        self._pending_state = dict(state)

    def on_train_begin(self, logs=None):
        """Reset, then apply a pending state; True when one was applied."""
        self._reset()
        if self._pending_state is None:
            return False
        for name, value in self._pending_state.items():
            setattr(self, name, value)
        self._pending_state = None
        return True

    @classmethod
    def from_config(cls, config):
        return cls(**config)
