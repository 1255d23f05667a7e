"""The `zoo` command line: a thin layer over the Python API."""

import argparse
import sys


def _demo(args):
    import keras

    from callbacks import BestWeights, CaffeLR, PlateauDecay
    from zoo.datasets import load_digits
    from zoo.small_cnn import small_cnn

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_val, y_val) = load_digits(validation_split=0.2, seed=args.seed)
    model = small_cnn(x_train.shape[1:], classes=10)
    model.compile(
        optimizer=keras.optimizers.SGD(momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    schedule = CaffeLR("step", base_lr=args.base_lr, gamma=0.5, stepsize=5 * steps_per_epoch)
    best = BestWeights(monitor="val_accuracy")
    print(
        f"Training small_cnn on digits ({len(x_train)} train / {len(x_val)} val), "
        f"lr_policy=step base_lr={args.base_lr} gamma=0.5 stepsize={schedule.stepsize}"
    )
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=[schedule, PlateauDecay(monitor="val_loss", factor=0.5, patience=2), best],
        verbose=2,
    )
    loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
    print(
        f"Best epoch {best.best_epoch + 1}: val_accuracy={best.best:.4f}; "
        f"the model holds its weights (val_accuracy={accuracy:.4f})."
    )
    return 0


def _validate(args):
    from zoo.spec import SpecError, load_spec

    status = 0
    for path in args.specs:
        try:
            load_spec(path)
            print(f"{path}: valid")
        except SpecError as error:
            print(error, file=sys.stderr)
            status = 1
    return status


def _list(args):
    from zoo.backbones import list_backbones

    rows = [(e.name, "x".join(map(str, e.input_size)), e.module,
             "imagenet" if e.pretrained else "-") for e in list_backbones(args.pattern)]
    if not rows:
        print(f"No backbone matches {args.pattern!r}.", file=sys.stderr)
        return 1
    import pandas as pd

    table = pd.DataFrame(rows, columns=["name", "input", "module", "weights"])
    print(table.to_string(index=False))
    return 0


def _train(args):
    from zoo.spec import SpecError
    from zoo.train import train

    try:
        train(args.spec, run_dir=args.run_dir, verbose=0 if args.quiet else 1)
    except SpecError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check specs; print every error with its JSON path")
    validate.add_argument("specs", nargs="+")
    validate.set_defaults(run=_validate)

    listing = commands.add_parser("list", help="the backbone registry as a table")
    listing.add_argument("pattern", nargs="?", default="*", help="name filter (glob), e.g. 'resnet*'")
    listing.set_defaults(run=_list)

    training = commands.add_parser("train", help="run a spec and write its run folder")
    training.add_argument("spec")
    training.add_argument("--run-dir", help="run folder (default: runs/<spec name>)")
    training.add_argument("--quiet", action="store_true", help="no progress output")
    training.set_defaults(run=_train)

    demo = commands.add_parser(
        "demo", help="train a small CNN on scikit-learn's digits with zoo callbacks"
    )
    demo.add_argument("--epochs", type=int, default=15)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--base-lr", type=float, default=0.05)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
