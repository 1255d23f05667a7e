"""The typed spec: one frozen dataclass per section, every default in one place.

`load_spec` validates a JSON spec and builds a `Spec` from it; each part of
the package takes only the section it needs (`Head` for the head, `Solver`
for the optimizer and callbacks, `Data` for the input pipeline). Field names
equal the keyword arguments of what a section builds (`Plateau` ->
`PlateauDecay`, `EarlyStopping` -> `BestWeights`, `Warmup` -> `Warmup`).

`to_dict(spec)` writes a spec out as JSON-able data (the run folder's
`spec.json`) and `from_dict(Spec, data)` reads it back to an equal object.
A spec's stages are resolved: a stage's solver is the top-level `solver`
with the stage's own fields on top (its `batchnorm` likewise), and a stage
without `frozen` or `slow` takes the top-level ones. A spec without
`stages` is one stage, `train`.
"""

import dataclasses
import types
import typing
from typing import Optional, Union

# `Solver.base_lr` when an LR range test picks it.
AUTO = "auto"

# A number for every channel, or one number per channel.
PerChannel = Union[float, tuple[float, ...]]


@dataclasses.dataclass(frozen=True)
class Normalization:
    """The pixels a model takes, in one of two forms: `(x - mean) / std`
    on [0, 1] pixels, or `x * scale + offset` on [0, 255] pixels (as
    KerasHub's image converters define them). Each value is a number, or a
    tuple of one per channel; the two forms convert into each other:
    `scale = 1 / (255 * std)`, `offset = -mean / std`.

    Example:

    ```python
    imagenet = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    minus_one_to_one = Normalization(scale=2 / 255, offset=-1.0)
    ```
    """

    mean: Optional[PerChannel] = None
    std: Optional[PerChannel] = None
    scale: Optional[PerChannel] = None
    offset: Optional[PerChannel] = None

    def __post_init__(self):
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        received = ", ".join(f"{name}={value!r}" for name, value in given.items()) or "none"
        if list(given) not in (["mean", "std"], ["scale", "offset"]):
            raise ValueError(f"Give `mean` and `std` (on [0, 1] pixels) or `scale` and `offset` (on [0, 255] "
                             f"pixels). Received: {received}")
        if len({len(value) for value in given.values() if isinstance(value, (list, tuple))}) > 1:
            raise ValueError(f"Per-channel values must have the same length, one value per channel. "
                             f"Received: {received}")

    def mean_and_std(self):
        """`(mean, std)`: the same normalization as `(x - mean) / std` on [0, 1] pixels."""
        if self.mean is not None:
            return self.mean, self.std
        return (_per_channel(lambda scale, offset: -offset / (255.0 * scale), self.scale, self.offset),
                _per_channel(lambda scale: 1 / (255.0 * scale), self.scale))

    def scale_and_offset(self):
        """`(scale, offset)`: the same normalization as `x * scale + offset` on [0, 255] pixels."""
        if self.scale is not None:
            return self.scale, self.offset
        return (_per_channel(lambda std: 1 / (255.0 * std), self.std),
                _per_channel(lambda mean, std: -mean / std, self.mean, self.std))

    def channel_errors(self, channels, where):
        """`(json_path, message)` of each per-channel value that does not
        have one value for each of `channels`; `where` is this section's JSON path."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return [(f"{where}.{name}", f"{len(value)} values, one per channel, for images of {channels} "
                                    f"channel{'s' if channels != 1 else ''}")
                for name, value in values.items() if isinstance(value, (list, tuple)) and len(value) != channels]


def _per_channel(formula, *values):
    """`formula` of the numbers `values`, or, when some hold one number per
    channel, a tuple of it for each channel (a number holds for every channel)."""
    lengths = {len(value) for value in values if isinstance(value, (list, tuple))}
    if not lengths:
        return formula(*values)
    return tuple(formula(*(value[channel] if isinstance(value, (list, tuple)) else value for value in values))
                 for channel in range(lengths.pop()))


@dataclasses.dataclass(frozen=True)
class Backbone:
    """Where the pretrained trunk comes from: exactly one of a
    keras.applications `name` (with `weights`), a saved `.keras` `model`,
    or a KerasHub `preset` (`zoo.backbones`). The head goes on the layer
    `cut_at` (a pyramid level such as `"P4"` for a preset), by default on
    the backbone's feature output. `preprocessing` tells a saved model's
    input preprocessing, which it does not know itself."""

    name: Optional[str] = None
    weights: Optional[str] = None
    input_shape: Optional[tuple[int, ...]] = None
    model: Optional[str] = None
    preset: Optional[str] = None
    cut_at: Optional[str] = None
    preprocessing: Optional[Normalization] = None


@dataclasses.dataclass(frozen=True)
class Filler:
    """A Caffe filler: constant (`value`), gaussian (`mean`, `std`), uniform
    (`min`, `max`), xavier and msra (`variance_norm`)."""

    type: str
    value: float = 0.0
    mean: float = 0.0
    std: float = 0.01
    min: float = 0.0
    max: float = 1.0
    variance_norm: str = "fan_in"


@dataclasses.dataclass(frozen=True)
class Head:
    classes: int
    pooling: str = "avg"
    hidden: tuple[int, ...] = ()
    hidden_activation: str = "relu"
    dropout: float = 0.0
    activation: str = "softmax"
    weight_filler: Filler = Filler("xavier")
    bias_filler: Filler = Filler("constant")


@dataclasses.dataclass(frozen=True)
class Selector:
    """Picks layers by exactly one of: a glob, a regex, every layer up to a
    name, or a `[start, stop)` index range."""

    match: Optional[str] = None
    regex: Optional[str] = None
    up_to: Optional[str] = None
    indices: Optional[tuple[int, int]] = None


@dataclasses.dataclass(frozen=True)
class SlowGroup(Selector):
    """Layers that learn at `lr_mult` x the base LR and decay at `decay_mult`."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0


@dataclasses.dataclass(frozen=True)
class BatchNormGroup(Selector):
    """BatchNormalization layers with their own `mode` and `momentum`."""

    mode: Optional[str] = None
    momentum: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    """How a stage runs its BatchNormalization layers (`zoo.batchnorm`).

    `mode` is "inference" (running statistics, also in training; gamma and
    beta train), "train" (Keras's default) or "frozen" (no updates); None
    means "inference" for a pretrained trunk and "train" from scratch.
    `momentum` replaces the layers' own. `recompute` (True: at the end of
    the stage; "epoch": before every validation) recomputes the running
    statistics over `recompute_batches` training batches (`PreciseBN`).
    `layers` give selected layers their own mode and momentum."""

    mode: Optional[str] = None
    momentum: Optional[float] = None
    recompute: Union[bool, str] = False
    recompute_batches: int = 100
    layers: tuple[BatchNormGroup, ...] = ()


@dataclasses.dataclass(frozen=True)
class Warmup:
    """`callbacks.Warmup`'s arguments."""

    warmup_steps: Union[int, str]
    start_lr: float = 0.0


@dataclasses.dataclass(frozen=True)
class Plateau:
    """`callbacks.PlateauDecay`'s arguments."""

    monitor: str = "val_loss"
    factor: float = 0.1
    patience: int = 10
    min_delta: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    mode: str = "auto"


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """`callbacks.BestWeights`'s arguments: the run ends on the best epoch's
    weights; `patience` (None: never) stops a stage early."""

    monitor: str = "val_loss"
    mode: str = "auto"
    patience: Optional[int] = None
    min_delta: float = 0.0


@dataclasses.dataclass(frozen=True)
class LRFinder:
    """`callbacks.LRFinder`'s arguments, for `base_lr: "auto"`."""

    rule: str = "valley"
    min_lr: float = 1e-7
    max_lr: float = 10.0
    num_steps: int = 100


@dataclasses.dataclass(frozen=True)
class Solver:
    """The optimizer, its learning-rate policy and the training length of one
    stage. `base_lr` is a number or `"auto"` (`AUTO`): the LR range test
    configured by `lr_finder` picks it before the stage trains."""

    base_lr: Optional[Union[float, str]] = None
    lr_finder: LRFinder = LRFinder()
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    lr_policy: str = "fixed"
    gamma: Optional[float] = None
    power: Optional[float] = None
    stepsize: Optional[Union[int, str]] = None
    stepvalue: Optional[tuple[Union[int, str], ...]] = None
    max_iter: Optional[Union[int, str]] = None
    max_lr: Optional[float] = None
    step_size: Optional[Union[int, str]] = None
    warmup: Optional[Warmup] = None
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    clipnorm: Optional[float] = None
    clipvalue: Optional[float] = None
    batch_size: int = 32
    epochs: Optional[int] = None
    plateau: Optional[Plateau] = None
    early_stopping: EarlyStopping = EarlyStopping()
    divergence_factor: Optional[float] = None
    jit_compile: bool = False
    steps_per_execution: int = 1


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    solver: Solver
    frozen: tuple[Selector, ...] = ()
    slow: tuple[SlowGroup, ...] = ()
    batchnorm: BatchNorm = BatchNorm()


@dataclasses.dataclass(frozen=True)
class Source:
    """Image files: a class-per-folder tree, a Caffe listing or a CSV."""

    folder: Optional[str] = None
    listing: Optional[str] = None
    csv: Optional[str] = None
    root: Optional[str] = None
    path_column: str = "path"
    label_column: str = "label"


@dataclasses.dataclass(frozen=True)
class Augment:
    flip: Optional[str] = None
    random_crop: Optional[tuple[int, int]] = None


@dataclasses.dataclass(frozen=True)
class Data(Source):
    """The training data; `channels` None means the model's input channels;
    `cache` is "memory", "file" or False. The builtin digits take a subset
    (`zoo.datasets.load_digits`): `classes`, `per_class` or `limit`
    training images, `validation_count` validation images (instead of
    `validation_split`)."""

    builtin: Optional[str] = None
    classes: Optional[tuple[int, ...]] = None
    per_class: Optional[int] = None
    limit: Optional[int] = None
    validation_split: float = 0.2
    validation_count: Optional[int] = None
    validation: Optional[Source] = None
    image_size: Optional[tuple[int, int]] = None
    channels: Optional[int] = None
    normalization: Union[str, Normalization] = "none"
    augment: Augment = Augment()
    shuffle: bool = True
    cache: Union[bool, str] = False
    on_bad_file: str = "error"


@dataclasses.dataclass(frozen=True)
class Search:
    """A keras-tuner search; `space` maps spec field paths to hyperparameters
    (JSON, as written: its keys are paths into the spec)."""

    space: dict
    tuner: str = "random"
    objective: str = "val_accuracy"
    direction: Optional[str] = None
    max_trials: int = 10
    executions_per_trial: int = 1
    max_epochs: int = 10
    factor: int = 3
    divergence_factor: float = 3.0
    seed: int = 0

    @property
    def goal(self):
        """`min` or `max`: `direction`, else `min` for a loss."""
        return self.direction or ("min" if "loss" in self.objective else "max")


@dataclasses.dataclass(frozen=True)
class Spec:
    """A whole run. `seed`, `deterministic`, `distribute` and
    `mixed_precision` ("bfloat16", "float16" or False) hold for every
    stage; `tracking` names where `train` reports it besides its files
    ("tensorboard", "mlflow")."""

    backbone: Backbone
    head: Head
    stages: tuple[Stage, ...]
    data: Data
    name: str = "zoo-run"
    seed: int = 0
    deterministic: bool = False
    distribute: Optional[str] = None
    mixed_precision: Union[bool, str] = False
    tracking: tuple[str, ...] = ("tensorboard",)
    search: Optional[Search] = None


def spec_from_json(raw):
    """A `Spec` from a validated JSON spec, its stages resolved."""
    raw = dict(raw)
    if isinstance(raw.get("tracking"), str):  # one name, or "none"
        raw["tracking"] = [] if raw["tracking"] == "none" else [raw["tracking"]]
    solver = raw.pop("solver", {})
    batchnorm = raw.pop("batchnorm", {})
    top = {key: raw.pop(key, []) for key in ("frozen", "slow")}
    stages = raw.pop("stages", None) or [{"name": "train"}]
    raw["stages"] = [
        {
            "name": stage.get("name", f"stage{index + 1}"),
            "frozen": stage.get("frozen", top["frozen"]),
            "slow": stage.get("slow", top["slow"]),
            "solver": stage_section(solver, stage.get("solver", {})),
            "batchnorm": stage_section(batchnorm, stage.get("batchnorm", {})),
        }
        for index, stage in enumerate(stages)
    ]
    return from_dict(Spec, raw)


def stage_section(top, own):
    """A stage's JSON `solver` or `batchnorm`: the top-level section with
    the stage's own fields on top (each replaces the top-level field whole)."""
    return {**top, **own}


def with_base_lr(spec, index, base_lr):
    """`spec` with stage `index`'s `base_lr` set (an "auto" one found)."""
    stages = list(spec.stages)
    stage = stages[index]
    stages[index] = dataclasses.replace(stage, solver=dataclasses.replace(stage.solver, base_lr=base_lr))
    return dataclasses.replace(spec, stages=tuple(stages))


def resolve_auto(spec, recorded):
    """`spec` with each "auto" `base_lr` taken from `recorded` (the spec a
    run wrote, `spec.json`) where that holds the value found."""
    for index, (stage, done) in enumerate(zip(spec.stages, recorded.stages)):
        if stage.solver.base_lr == AUTO and done.solver.base_lr != AUTO:
            spec = with_base_lr(spec, index, done.solver.base_lr)
    return spec


def from_dict(cls, data):
    """An instance of dataclass `cls` from JSON data (lists become tuples,
    ints become floats where a float is declared)."""
    hints = typing.get_type_hints(cls)
    return cls(**{key: _convert(hints[key], value) for key, value in data.items()})


def _convert(hint, value):
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if isinstance(value, dict):
            hint = next(a for a in options if dataclasses.is_dataclass(a))
        elif isinstance(value, list):  # a number or a list of them (`PerChannel`)
            hint = next(a for a in options if typing.get_origin(a) is tuple)
        else:
            hint = next((a for a in options if not dataclasses.is_dataclass(a)), options[0])
        return _convert(hint, value)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_convert(item, v) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_dict(section):
    """JSON-able data of a section; unset (None) fields are left out."""
    if dataclasses.is_dataclass(section):
        return {f.name: to_dict(getattr(section, f.name)) for f in dataclasses.fields(section)
                if getattr(section, f.name) is not None}
    if isinstance(section, (tuple, list)):
        return [to_dict(v) for v in section]
    if isinstance(section, dict):
        return {k: to_dict(v) for k, v in section.items()}
    return section


def differences(a, b, path="$"):
    """JSON paths where the JSON data `a` and `b` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += differences(a.get(key), b.get(key), f"{path}.{key}")
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]

