"""Input pipeline throughput: the zoo's pipeline, uncached and with `data.cache`, vs image_dataset_from_directory.

What it measures: images per second that each pipeline delivers as float32
batches, with nothing consuming them but the loop that iterates them (the
most a pipeline can feed an accelerator), on a folder of JPEG files
generated here (--images files of --size x --size pixels in --classes class
folders, in a temporary folder: smooth random colour gradients with noise,
so that decoding costs what it costs on photographs). Every pipeline
resizes to --image-size (224) and batches --batch (64):

- image_dataset_from_directory: `keras.utils.image_dataset_from_directory(
  folder, image_size=(224, 224), batch_size=64).prefetch(AUTOTUNE)`, the
  usual hand-written pipeline;
- zoo: `zoo.data.load_data` on `{"folder": ..., "image_size": [224, 224]}`
  (1% held out for validation), its training batches;
- zoo, cache "memory" and zoo, cache "file": the same with `data.cache`.

Each pipeline runs --epochs epochs (3), each timed from its first batch
asked for to its last one delivered, in --rounds rounds (2): each round
builds every pipeline afresh and runs its epochs, the pipelines in an order
that rotates from round to round, so that the machine's ups and downs fall
on all of them. The first round's first epoch (which fills a cache) is
reported apart from the median of every later epoch. Setup is the time to build
the pipeline (listing the files; for the zoo, also checking that every file
decodes, as `zoo validate` does). All run one after the other in one
process, the files already in the OS's file cache, after one untimed
warm-up epoch of each on a few files (the process's one-time costs, such as
TensorFlow's thread pools and autograph, would fall on whichever runs
first). Ratios are to
image_dataset_from_directory's images per second. Targets: the zoo pipeline
at least as fast as image_dataset_from_directory, and with a cache at least
3x as fast from the second epoch on.

    python bench/input_pipeline.py [--images 3000] [--size 256] [--epochs 3] [--rounds 2]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _common import processor  # noqa: E402
from zoo.data import load_data  # noqa: E402
from zoo.spec import load_spec  # noqa: E402


def write_images(folder, images, size, classes, seed=0):
    """`images` JPEG files of `size` x `size` in `classes` class folders."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:size, 0:size] / size
    for index in range(images):
        label = index % classes
        os.makedirs(os.path.join(folder, f"class_{label}"), exist_ok=True)
        # Per channel: a random linear gradient and a low-frequency wave, plus noise.
        slope = rng.uniform(-1, 1, (2, 3))
        phase, frequency = rng.uniform(0, 2 * np.pi, 3), rng.uniform(1, 6, 3)
        image = (128 + 60 * (rows[..., None] * slope[0] + columns[..., None] * slope[1])
                 + 40 * np.sin(frequency * (rows + columns)[..., None] * np.pi + phase)
                 + rng.normal(0, 8, (size, size, 3)))
        keras.utils.save_img(os.path.join(folder, f"class_{label}", f"{index}.jpg"),
                             np.clip(image, 0, 255).astype("uint8"), scale=False, quality=90)


def zoo_pipeline(folder, image_size, batch_size, epochs, cache, cache_dir):
    """`(setup seconds, make)`: `make()` gives the zoo's training batches of
    `epochs` epochs (filling the cache, if any) and the steps of an epoch."""
    start = time.perf_counter()
    spec = load_spec({"backbone": {"name": "small_cnn"}, "head": {"classes": 10},
                      "solver": {"base_lr": 0.01, "epochs": 1},
                      "data": {"folder": folder, "image_size": [image_size, image_size], "channels": 3,
                               "validation_split": 0.01, "cache": cache}})
    data = load_data(spec.data, seed=0, channels=3, cache_dir=cache_dir)
    setup = time.perf_counter() - start
    return setup, lambda: (data.train(batch_size, 0, epochs), data.steps(batch_size))


def keras_pipeline(folder, image_size, batch_size):
    start = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(folder, image_size=(image_size, image_size),
                                                       batch_size=batch_size, verbose=False)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return time.perf_counter() - start, dataset


def keras_epochs(dataset):
    """`next_epoch()`: one new pass over the dataset, as `fit` makes, as
    `(seconds, images)`."""
    def next_epoch():
        start, images = time.perf_counter(), 0
        for x, _ in dataset:
            images += int(x.shape[0])
        return time.perf_counter() - start, images

    return next_epoch


def zoo_epochs(make):
    """`next_epoch()`: the next epoch of one pass over all epochs, as `fit`
    reads them, as `(seconds, images)`; the first includes making the
    pipeline (and filling its cache)."""
    state = {}

    def next_epoch():
        start, images = time.perf_counter(), 0
        if not state:
            dataset, state["steps"] = make()
            state["iterator"] = iter(dataset)
        for _ in range(state["steps"]):
            x, _ = next(state["iterator"])
            images += int(x.shape[0])
        return time.perf_counter() - start, images

    return next_epoch


def measure(folder, args, epochs, rounds):
    """`{pipeline: (setup seconds, first epoch, [later epochs])}`, each epoch
    as `(seconds, images)`. Each round builds every pipeline afresh and runs
    its epochs one after the other (a pipeline prefetches ahead, so two at
    once would compete), in an order that rotates from round to round; the
    first epoch is the first round's (a file cache is filled then, and read
    in later rounds)."""
    names = ["image_dataset_from_directory", "zoo", "zoo, cache \"memory\"", "zoo, cache \"file\""]
    caches = dict(zip(names, (None, False, "memory", "file")))
    results = {}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if caches[name] is None:
                setup, dataset = keras_pipeline(folder, args.image_size, args.batch)
                next_epoch = keras_epochs(dataset)
            else:
                setup, make = zoo_pipeline(folder, args.image_size, args.batch, epochs, caches[name],
                                           os.path.join(folder + "-cache", str(caches[name])))
                next_epoch = zoo_epochs(make)
            timings = [next_epoch() for _ in range(epochs)]
            if name not in results:
                results[name] = (setup, timings[0], [])
            results[name][2].extend(timings[1:])
    return {name: results[name] for name in names}


def machine():
    return f"{processor()}; TensorFlow {tf.__version__}, Keras {keras.__version__}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=256, help="side of the generated JPEG files")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=224, help="side the pipelines resize to")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        folder = os.path.join(workdir, "images")
        start = time.perf_counter()
        write_images(folder, args.images, args.size, args.classes)
        print(f"{args.images} JPEG files of {args.size}x{args.size} written in {time.perf_counter() - start:.1f} s",
              flush=True)
        warm_up = os.path.join(workdir, "warm-up")
        write_images(warm_up, 2 * args.batch, args.size, args.classes, seed=1)
        measure(warm_up, args, 1, 1)
        results = measure(folder, args, args.epochs, args.rounds)
        print("measured", flush=True)

    print(f"\n{args.images} JPEG files ({args.size}x{args.size}, {args.classes} classes) resized to "
          f"{args.image_size}x{args.image_size}, batch {args.batch}, {args.rounds} rounds of {args.epochs} epochs; {machine()}")
    print(f"{'pipeline':<30} {'setup (s)':>9} {'epoch 1 (img/s)':>16} {'epochs 2+ (img/s, median)':>26} "
          f"{'ratio, epoch 1':>15} {'ratio, epochs 2+':>17}")
    first = {name: images / seconds for name, (_, (seconds, images), _) in results.items()}
    later = {name: float(np.median([images / seconds for seconds, images in epochs]))
             for name, (_, _, epochs) in results.items()}
    base = "image_dataset_from_directory"
    for name, (setup, _, _) in results.items():
        print(f"{name:<30} {setup:>9.2f} {first[name]:>16.0f} {later[name]:>26.0f} "
              f"{first[name] / first[base]:>15.2f} {later[name] / later[base]:>17.2f}")


if __name__ == "__main__":
    main()
