"""The `zoo` command line: a thin layer over the Python API."""

import argparse
import shlex
import sys

from zoo import logs


def _validate(args):
    from zoo.spec import QUICK_VALID, SpecError, load_spec

    if not args.quick:
        from zoo.train import print_warnings, validate
    status = 0
    for path in args.specs:
        try:
            if args.quick:  # as `validate(path, deep=False)`, without importing zoo.train (and Keras)
                load_spec(path)
                print(f"{path}: {QUICK_VALID}")
            else:
                validation = validate(path, unsafe=args.unsafe)
                print(f"{path}: {validation.summary()}")
                print_warnings(validation.warnings)  # the spec stays valid: no change to the exit status
        except SpecError as error:
            print(error, file=sys.stderr)
            status = 1
    return status


def _list(args):
    from zoo.backbones import list_backbones

    try:
        entries = list_backbones(args.pattern, args.source)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if not entries:
        print(f"No backbone matches {args.pattern!r}" + (f" in {args.source}" if args.source else "")
              + "; `zoo list` shows them all.", file=sys.stderr)
        return 1
    import pandas as pd

    rows = [(e.source, e.name, e.family, "x".join(map(str, e.input_size)) if e.input_size else "-",
             f"{e.params / 1e6:.1f}M" if e.params else "-", e.pretrained or "-") for e in entries]
    table = pd.DataFrame(rows, columns=["source", "name", "family", "input", "params", "weights"])
    print(table.to_string(index=False))
    return 0


def _train(args):
    from zoo.spec import SpecError
    from zoo.train import RunError, train

    try:
        result = train(args.spec, run_dir=args.run_dir, resume=args.resume, overwrite=args.overwrite,
                       verbose=0 if args.quiet else 1, unsafe=args.unsafe)
    except SpecError as error:
        print(error, file=sys.stderr)
        return 2
    except RunError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        command = ["zoo", "train", args.spec] + (["--run-dir", args.run_dir] if args.run_dir else [])
        command += ["--resume"] + (["--quiet"] if args.quiet else [])
        print(f"\nInterrupted. The finished epochs are kept; continue with: {shlex.join(command)}",
              file=sys.stderr)
        return 130
    if result.diverged:
        print(result.diverged, file=sys.stderr)
        return 1
    return 0


def _tune(args):
    from zoo.spec import SpecError
    from zoo.tune import TuneError, tune

    try:
        tune(args.spec, directory=args.dir, refine=args.refine, verbose=0 if args.quiet else 1,
             unsafe=args.unsafe)
    except SpecError as error:
        print(error, file=sys.stderr)
        return 2
    except TuneError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def _lr_find(args):
    from zoo.spec import SpecError, load_spec
    from zoo.train import lr_find

    try:
        stages = [stage.name for stage in load_spec(args.spec).stages]
        stage = _stage_index(args.stage, stages)
        result = lr_find(args.spec, stage=stage, out_dir=args.out, verbose=1, unsafe=args.unsafe)
    except SpecError as error:
        print(error, file=sys.stderr)
        return 2
    if not result.suggestions:
        print(f"No learning rate lowered the loss ({result.stop_reason}): widen lr_finder's min_lr..max_lr, "
              "or check the data and the frozen layers.", file=sys.stderr)
        return 1
    return 0


def _stage_index(given, stages):
    """The 0-based index of `--stage`: a 1-based number or a stage's name."""
    from zoo.spec import SpecError

    if given is None:
        return 0
    if given in stages:
        return stages.index(given)
    if given.isdigit() and 1 <= int(given) <= len(stages):
        return int(given) - 1
    raise SpecError([("$.stages", f"--stage {given}: the spec has no stage {given}; its stages are "
                                  + ", ".join(f"{i + 1} ({name})" for i, name in enumerate(stages)))])


def _plot(args):
    from zoo.reports import plot_runs

    try:
        path = plot_runs(args.run_dirs, args.out)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"Written: {path}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    _verbose_flag(parser, default=False)
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser(
        "validate", help="check specs as `zoo train` does before training; print every error with its JSON path")
    validate.add_argument("specs", nargs="+")
    validate.add_argument("--quick", action="store_true",
                          help="only the schema and the rules between fields: no model built, no data read")
    _unsafe_flag(validate)
    validate.set_defaults(run=_validate)

    listing = commands.add_parser(
        "list", help="the backbones a spec can name: keras.applications models and KerasHub presets")
    listing.add_argument("pattern", nargs="?",
                         help="part of the name, any case (resnet); a glob when it holds * ? [ (resnet5*)")
    listing.add_argument("--source", help="only keras.applications, keras_hub or zoo")
    listing.set_defaults(run=_list)

    training = commands.add_parser("train", help="run a spec and write its run folder")
    training.add_argument("spec")
    training.add_argument("--run-dir", help="run folder (default: runs/<spec name>)")
    again = training.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in the run folder from its last finished epoch")
    again.add_argument("--overwrite", action="store_true", help="delete the run in the run folder and start again")
    training.add_argument("--quiet", action="store_true", help="no progress output")
    _unsafe_flag(training)
    training.set_defaults(run=_train)

    finding = commands.add_parser(
        "lr-find", help="run a stage's LR range test without training; print every rule's suggestion")
    finding.add_argument("spec")
    finding.add_argument("--stage", help="the stage: its number (from 1) or name (default: the first)")
    finding.add_argument("--out", help="folder for lr_find.csv and lr_find.png (default: runs/<spec name>-lr-find)")
    _unsafe_flag(finding)
    finding.set_defaults(run=_lr_find)

    plotting = commands.add_parser("plot", help="compare run folders: their curves in one PNG")
    plotting.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plotting.add_argument("--out", default="runs/comparison.png", help="the PNG (default: runs/comparison.png)")
    plotting.set_defaults(run=_plot)

    tuning = commands.add_parser("tune", help="run a spec's keras-tuner search; write the best spec")
    tuning.add_argument("spec")
    tuning.add_argument("--dir", help="search folder (default: runs/<spec name>-search); rerun to resume")
    tuning.add_argument("--refine", action="store_true", help="then search again around the best values")
    tuning.add_argument("--quiet", action="store_true", help="no progress output")
    _unsafe_flag(tuning)
    tuning.set_defaults(run=_tune)
    for command in commands.choices.values():
        _verbose_flag(command)
    return parser


def _unsafe_flag(parser):
    parser.add_argument("--unsafe", action="store_true",
                        help="load a .keras backbone whose Lambda layers run code stored in the file "
                             "(only for files you trust)")


def _verbose_flag(parser, default=argparse.SUPPRESS):
    # On the command and on each subcommand (`zoo --verbose train s.json`,
    # `zoo train s.json --verbose`); a subcommand's default leaves the command's.
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="show TensorFlow's own log output (its C++ info, warning and error lines, "
                             "absl and tensorflow logger warnings), hidden by default")


def _loads_tensorflow(args):
    """Whether the command needs TensorFlow: all but `list` and `validate --quick`."""
    return not (args.command == "list" or (args.command == "validate" and args.quick))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if _loads_tensorflow(args):
        # Before anything imports it: its own log lines stay off the terminal unless --verbose.
        logs.import_tensorflow(args.verbose)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
