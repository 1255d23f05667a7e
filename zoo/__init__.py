"""Declarative fine-tuning of Keras CNNs.

The names below are imported on first use (PEP 562): `zoo list` and
`zoo validate --quick` need neither TensorFlow nor Keras, and do not load
them; `zoo.train`, `zoo.tune`, `zoo.validate`, `zoo.build_model`, `zoo.lr_find` and
`zoo.plot_runs` do.
"""

import importlib
import sys
import types

from zoo import logs  # noqa: F401 (sets TensorFlow's default log level before anything imports it)

# Each public name: the module that defines it.
_EXPORTS = {
    "RunError": "zoo.train",
    "Spec": "zoo.sections",
    "SpecError": "zoo.spec",
    "TrainResult": "zoo.train",
    "TuneError": "zoo.tune",
    "TuneResult": "zoo.tune",
    "Validation": "zoo.train",
    "build_model": "zoo.train",
    "get_backbone": "zoo.backbones",
    "list_backbones": "zoo.backbones",
    "load_digits": "zoo.datasets",
    "load_spec": "zoo.spec",
    "lr_find": "zoo.train",
    "plot_runs": "zoo.reports",
    "small_cnn": "zoo.small_cnn",
    "to_dict": "zoo.sections",
    "train": "zoo.train",
    "tune": "zoo.tune",
    "validate": "zoo.train",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The `zoo` module. Importing a submodule binds it on its package, so
    importing `zoo.train` (the module) would hide `zoo.train` (the function):
    where a submodule and the name it exports are one, the name is bound."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
