"""Training data as tf.data pipelines: built-in digits, image folders,
Caffe-style listing files and CSV files.

Every random choice of the pipeline (the order of an epoch, a crop, a flip)
is a stateless random op keyed on the run's seed, the epoch and the batch's
position in it. The batches of epoch `e` are therefore the same in every
process, whether a run starts at epoch 0 or resumes at `e`.

Image files are decoded in parallel at `image_size`, their pixels rounded
to whole numbers in [0, 255]. With `data.cache`, each split is decoded once,
on its first batches, into one N x H x W x C uint8 array (in memory, or a
memory-mapped `.npy` file), and every epoch gathers its batches from it in
the same order: cached and uncached batches are the same, bit for bit.
Batches are prefetched while the model trains.
"""

import dataclasses
import hashlib
import math
import os
import re

import numpy as np
import pandas as pd
import tensorflow as tf

from callbacks._files import write_atomically
from zoo.datasets import DIGITS_SIZE, load_digits, shuffle_split
from zoo.sections import Normalization
from zoo.spec import SpecError, crop_errors

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Salts that give each random op of a batch its own stream.
_CROP, _FLIP_HORIZONTAL, _FLIP_VERTICAL = 1, 2, 3
# Part of every cache file's hash: changed whenever decoding changes, so
# that no cache of an older decoding is read.
_CACHE_FORMAT = "uint8 at image_size, bilinear resize rounded, v1"
# Images decoded per step while a cache is filled.
_FILL_BATCH = 256


def load_data(data, seed, channels, classes=None, preprocess=None, cache_dir=None):
    """The `ImageData` of a `Data` section, every file checked before training.

    Image files are decoded at `data.image_size`; without one, at the size
    of the files, when they all have the same (else a `SpecError` at
    `$.data.image_size` counts the sizes found). The builtin digits are
    8x8 unless `data.image_size` says otherwise.

    Args:
        data: `zoo.sections.Data`.
        seed: Integer. Keys the validation split, every epoch's order and
            the augmentation.
        channels: Integer. The model's input channels: the images' channels
            unless `data.channels` says otherwise.
        classes: Integer or None. The model's outputs: integer labels must
            lie in `[0, classes)`.
        preprocess: The backbone's own preprocessing of [0, 255] pixels
            (a `preprocess_input`, a KerasHub image converter), for
            `normalization: "backbone"`.
        cache_dir: The folder of `data.cache: "file"`'s files (a run
            folder's `cache/`); needed only once batches are asked for.

    Unreadable or corrupt images, missing files, empty class folders,
    listing lines without a label, negative labels and labels unknown to
    the training data are bad files (`PROBLEMS`): with `data.on_bad_file:
    "error"` they raise one `SpecError` (a count and the first paths of
    each kind); with `"skip"` they are left out and listed in
    `ImageData.skipped`. Integer labels of `classes` or more are an error
    of `head.classes` either way, as is a training or validation set left
    empty.
    """
    channels = data.channels or channels
    if isinstance(data.normalization, Normalization):
        errors = data.normalization.channel_errors(channels, "$.data.normalization")
        if errors:
            raise SpecError(errors)
    bad = BadFiles(data.on_bad_file)
    if data.builtin:
        train, validation = load_digits(validation_split=data.validation_split, seed=seed, classes=data.classes,
                                        per_class=data.per_class, limit=data.limit,
                                        validation_count=data.validation_count)
        names = [str(c) for c in data.classes or range(10)]
    else:
        paths, labels, names = read_source(data, "$.data", bad, classes)
        if data.validation is not None:
            train = (paths, labels)
            validation = read_source(data.validation, "$.data.validation", bad, classes, names)[:2]
        else:
            train, validation = shuffle_split(paths, labels, data.validation_split, seed)
        train, train_sizes = bad.readable(*train, "$.data", channels)
        validation, validation_sizes = bad.readable(*validation, "$.data.validation" if data.validation else "$.data",
                                                    channels)
    bad.check()
    for part, where, (paths, _) in (("training", "$.data", train),
                                    ("validation", "$.data.validation" if data.validation else "$.data.validation_split",
                                     validation)):
        if len(paths) == 0:
            raise SpecError([(where, f"no {part} images: {len(train[0]) + len(validation[0])} usable in all, "
                                     f"{len(bad.skipped)} bad files skipped")])
    if not data.builtin and data.image_size is None:
        data = dataclasses.replace(data, image_size=_common_size(np.concatenate([train_sizes, validation_sizes])))
    errors = crop_errors(data.augment.random_crop, data.image_size or DIGITS_SIZE)
    if errors:
        raise SpecError(errors)
    decode = None if data.builtin else _decoder(data.image_size, channels)
    return ImageData(data, seed, channels, train, validation, names, decode, preprocess, bad.skipped, cache_dir)


# Each kind of bad file, and its plural.
PROBLEMS = {
    "unreadable or corrupt image": "unreadable or corrupt images",
    "empty class folder": "empty class folders",
    "missing file": "missing files",
    "line without a label": "lines without a label",
    "negative label": "negative labels",
    "label not among the training classes": "labels not among the training classes",
    "class folder not among the training classes": "class folders not among the training classes",
    "line": "lines",
}


class BadFiles:
    """The bad files found while reading a data source, by the JSON path of
    the source and the kind of problem (a key of `PROBLEMS`); `check`
    raises them, unless they are to be skipped."""

    SHOWN = 3  # paths shown per kind of problem

    def __init__(self, on_bad_file):
        self.on_bad_file = on_bad_file
        self.found = {}  # (json path, problem) -> [path or "file:line"]

    def add(self, where, problem, item):
        self.found.setdefault((where, problem), []).append(item)

    def readable(self, paths, labels, where, channels):
        """`((paths, labels), sizes)` of the files whose image decodes, as
        training will decode it; `sizes` holds each one's `(height, width)`."""
        sizes = _decoded_sizes(paths, channels)
        good = sizes[:, 0] > 0
        for path in np.asarray(paths)[~good]:
            self.add(where, "unreadable or corrupt image", str(path))
        return (np.asarray(paths)[good], np.asarray(labels)[good]), sizes[good]

    @property
    def skipped(self):
        """`[(path, problem)]` of every bad file."""
        return [(item, problem) for (_, problem), items in self.found.items() for item in items]

    def check(self):
        """Raise the bad files as one `SpecError`, unless they are to be skipped."""
        if not self.found or self.on_bad_file == "skip":
            return
        errors = [(where, _counted(problem, items)) for (where, problem), items in self.found.items()]
        errors.append(("$.data.on_bad_file", "fix or remove the files above, or set \"skip\" to train without them"))
        raise SpecError(errors)


def summary_of_skipped(skipped):
    """One line on the files `on_bad_file: "skip"` left out (`ImageData.skipped`)."""
    kinds = {}
    for item, problem in skipped:
        kinds.setdefault(problem, []).append(item)
    return "Skipped " + "; ".join(_counted(problem, items) for problem, items in kinds.items())


def _counted(problem, items):
    """'2 missing files: a, b' (and how many more than `BadFiles.SHOWN`)."""
    more = f" and {len(items) - BadFiles.SHOWN} more" if len(items) > BadFiles.SHOWN else ""
    return (f"{len(items)} {problem if len(items) == 1 else PROBLEMS[problem]}: "
            f"{', '.join(items[:BadFiles.SHOWN])}{more}")


class ImageData:
    """Training and validation images of a spec, batched on demand.

    Attributes:
        class_names: The name of each label.
        train_size: The number of training images.
        validation_size: The number of validation images.
        skipped: `[(path, problem)]` of the bad files left out.
    """

    def __init__(self, data, seed, channels, train, validation, class_names, decode, preprocess, skipped,
                 cache_dir=None):
        self._data, self._seed = data, seed
        self._channels = channels
        self._splits = {"training": train, "validation": validation}
        self._decode = decode
        self._preprocess = preprocess
        # The digits (no decode) are in memory already.
        self._cache = data.cache if decode is not None else False
        self._cache_dir = cache_dir
        self._cached = {}  # split -> its decoded images, a uint8 array (memory-mapped for "file")
        # Gray images (the digits) are repeated over RGB when 3 channels are asked for.
        self._to_rgb = data.builtin is not None and channels == 3
        self.class_names = class_names
        self.train_size = len(train[0])
        self.validation_size = len(validation[0])
        self.skipped = skipped

    def steps(self, batch_size):
        """Training batches per epoch (the last one may be smaller)."""
        return math.ceil(self.train_size / batch_size)

    def train(self, batch_size, first_epoch, epochs, verbose=0):
        """The training batches of epochs `first_epoch ... first_epoch + epochs - 1`,
        one after the other: `epochs * steps(batch_size)` batches. With
        `data.cache`, the first call fills the training images' cache
        (saying so when `verbose`)."""
        batches = self._batches("training", verbose)
        size = self.train_size

        def one_epoch(epoch):
            key = tf.random.experimental.stateless_fold_in(tf.constant([self._seed, 0], tf.int64), epoch)
            if self._data.shuffle:
                order = tf.argsort(tf.random.stateless_uniform([size], seed=key))
            else:
                order = tf.range(size)
            return batches(tf.data.Dataset.from_tensor_slices(order), batch_size).enumerate().map(
                lambda position, batch: self._prepare(
                    *batch, key=tf.random.experimental.stateless_fold_in(key, position)),
                num_parallel_calls=tf.data.AUTOTUNE)

        epochs = tf.data.Dataset.range(first_epoch, first_epoch + epochs)
        return epochs.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)

    def validation(self, batch_size, verbose=0):
        """The validation batches, in a fixed order, without augmentation.
        With `data.cache`, the first call fills the validation images' cache."""
        return self._validation_batches(batch_size, self._batches("validation", verbose))

    @property
    def image_shape(self):
        """The `(height, width, channels)` of the images the model gets."""
        # From the uncached pipeline: nothing is decoded to know it.
        batches = self._validation_batches(1, self._batches("validation", use_cache=False))
        return tuple(batches.element_spec[0].shape[1:])

    def _validation_batches(self, batch_size, batches):
        indices = tf.data.Dataset.range(self.validation_size)
        return batches(indices, batch_size).map(lambda images, labels: self._prepare(images, labels, key=None),
                                                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def _batches(self, split, verbose=0, use_cache=True):
        """A function from a dataset of indices into `split` and a batch
        size to the batches of `(images, labels)` at those indices: with a
        cache, one gather a batch from the split's decoded images; without,
        each image decoded from its file (or taken from the digits).

        Its tensors are made here, eagerly: a dataset function captures
        them, where one made inside it would copy them into its graph."""
        sources, labels = self._splits[split]
        labels = tf.constant(labels)
        if self._cache and use_cache:
            images = self._cached_images(split, verbose)
            return lambda indices, batch_size: indices.batch(batch_size).map(
                lambda at: (images(at), tf.gather(labels, at)), num_parallel_calls=tf.data.AUTOTUNE)
        sources = tf.constant(sources)  # file paths, or the digits themselves
        decode = self._decode or (lambda image: image)
        return lambda indices, batch_size: indices.map(
            lambda at: (decode(tf.gather(sources, at)), tf.gather(labels, at)),
            num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

    def _cached_images(self, split, verbose):
        """A function from indices to the decoded images of `split` there,
        gathered from its cache, which the first call fills: one uint8 array
        in memory, or memory-mapped from a `.npy` file in `cache_dir`.
        (A NumPy gather: as fast as `tf.gather` here, and a NumPy array
        becomes no tensor, which would be a copy of it.)"""
        if split not in self._cached:
            paths = self._splits[split][0]
            shape = (len(paths), *self._data.image_size, self._channels)
            if self._cache == "memory":
                if verbose:
                    print(f"Caching the {len(paths):,} {split} images in memory ({_shape_and_size(shape)}).")
                self._cached[split] = np.empty(shape, np.uint8)
                self._decode_into(paths, self._cached[split])
            else:
                self._cached[split] = self._file_cache(split, paths, shape, verbose)
        array = self._cached[split]

        def gather(indices):
            batch = tf.numpy_function(lambda at: np.take(array, at, axis=0), [indices], tf.uint8, stateful=False)
            return tf.ensure_shape(batch, (None, *array.shape[1:]))

        return gather

    def _file_cache(self, split, paths, shape, verbose):
        """The decoded images of `split`, memory-mapped from their `.npy`
        file in `cache_dir`, which is written first unless it is there: its
        name's hash covers every file's path, size and modification time,
        the image size and the channels, so a changed file gets a new one."""
        if self._cache_dir is None:
            raise ValueError("`data.cache: \"file\"` needs a folder for its files: pass `cache_dir` to "
                             "`load_data`.")
        path = os.path.join(self._cache_dir, cache_file_name(split, paths, shape[1:]))
        array = _read_cache(path, shape)
        if array is not None:
            if verbose:
                print(f"Reading the {len(paths):,} {split} images from the cache {path}.")
            return array
        if verbose:
            print(f"Caching the {len(paths):,} {split} images in {path} ({_shape_and_size(shape)}).")

        def write(temporary):
            # Written straight to disk: the set need not fit in memory.
            array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
            self._decode_into(paths, array)
            array.flush()  # msync: on disk before the rename makes it the cache

        write_atomically(path, write)
        return np.load(path, mmap_mode="r")

    def _decode_into(self, paths, array):
        """Decode the image files `paths` into the uint8 `array`, in order, in parallel."""
        decoded = tf.data.Dataset.from_tensor_slices(paths).map(
            lambda path: tf.cast(self._decode(path), tf.uint8),  # whole numbers in [0, 255]: exact
            num_parallel_calls=tf.data.AUTOTUNE)
        start = 0
        for batch in decoded.batch(_FILL_BATCH).prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            array[start:start + len(batch)] = batch
            start += len(batch)

    def _prepare(self, images, labels, key):
        """Resize, channels, crop, flip and normalize a batch (float32 from
        here on); `key` None means validation (central crops, no flips)."""
        data = self._data
        # Files are resized on decode; the digits here, unless image_size is
        # their own (the default for a backbone of their size).
        if data.builtin and data.image_size and tuple(data.image_size) != DIGITS_SIZE:
            images = tf.image.resize(images, data.image_size)
        if self._to_rgb:
            images = tf.repeat(images, 3, axis=-1)
        crop = data.augment.random_crop
        if crop and key is None:
            images = tf.image.resize_with_crop_or_pad(images, *crop)
        elif crop:
            shape = tf.shape(images)
            images = tf.image.stateless_random_crop(
                images, [shape[0], crop[0], crop[1], images.shape[-1]], seed=_salted(key, _CROP))
        flip = data.augment.flip
        if flip and key is not None:
            if flip in ("horizontal", "horizontal_and_vertical"):
                images = _random_flip(images, 2, _salted(key, _FLIP_HORIZONTAL))
            if flip in ("vertical", "horizontal_and_vertical"):
                images = _random_flip(images, 1, _salted(key, _FLIP_VERTICAL))
        if images.dtype == tf.uint8:  # gathered from a cache: the decoded pixels, exactly
            images = tf.cast(images, "float32")
        files = self._decode is not None  # [0, 255] pixels; the digits are [0, 1]
        if data.normalization == "backbone":  # on [0, 255] pixels
            return self._preprocess(images if files else images * 255.0), labels
        if files:
            images = images / 255.0
        if isinstance(data.normalization, Normalization):
            mean, std = data.normalization.mean_and_std()  # numbers, or tuples over the channels
            images = (images - mean) / std
        return images, labels


def cache_file_name(split, paths, image_shape):
    """`<split>-<hash>.npy`, the cache file of the image files `paths`
    decoded to `image_shape` (height, width, channels): the hash covers each
    file's path, size and modification time, and the shape."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{tuple(image_shape)}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    return f"{split}-{digest.hexdigest()[:16]}.npy"


def _read_cache(path, shape):
    """The cache file `path` memory-mapped, or None when it is not there or
    is not an array of `shape` (damaged: it is written again)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):  # not there; truncated, or not a .npy file
        return None
    return array if array.shape == shape and array.dtype == np.uint8 else None


def _shape_and_size(shape):
    """'1000 x 224 x 224 x 3 uint8, 143.6 MiB'."""
    size = math.prod(shape)
    amount = f"{size / 2**30:,.1f} GiB" if size >= 2**30 else f"{size / 2**20:,.1f} MiB"
    return f"{' x '.join(map(str, shape))} uint8, {amount}"


def scale_and_offset(normalization):
    """`(scale, offset)` such that `pixels * scale + offset`, on [0, 255]
    pixels, is what `normalization` gives the model, each a number or a
    tuple of one per channel (as KerasHub's image converters take them);
    None for "backbone" (the backbone's own)."""
    if normalization == "backbone":
        return None
    if normalization == "none":
        return 1 / 255.0, 0.0
    return normalization.scale_and_offset()


def _salted(key, salt):
    return tf.random.experimental.stateless_fold_in(key, salt)


def _random_flip(images, axis, seed):
    # One coin per image, so a batch mixes flipped and unflipped images.
    flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed=seed) < 0.5
    return tf.where(flip, tf.reverse(images, [axis]), images)


def read_source(source, where, bad, classes=None, class_names=None):
    """`(paths, labels, class_names)` of a folder, listing or CSV `Source`
    at JSON path `where`, its bad files added to `bad` (`BadFiles`).

    Labels that are not integers are class names, numbered in sorted order.
    Integer labels (Caffe listings) keep their values, which must lie in
    `[0, classes)`; their class names are `"0" ... str(max label)`.
    Validation data (`class_names` given) is labelled as the training data
    was: by those names."""
    if source.folder:
        rows = _folder_rows(source.folder, where, bad, class_names)
    elif source.listing:
        rows = _listing_rows(source, where, bad)
    else:
        rows = _csv_rows(source, where, bad)
    numeric = not source.folder and all(_is_integer(label) for _, label, _ in rows)
    if class_names is not None:
        numeric = numeric and class_names == [str(i) for i in range(len(class_names))]
    names = class_names or sorted({label for _, label, _ in rows})
    index = {name: i for i, name in enumerate(names)}
    paths, labels, too_large = [], [], []
    for path, label, line in rows:
        if numeric:
            value = int(label)
            if value < 0:
                bad.add(where, "negative label", f"{line}: {value}")
                continue
            if classes is not None and value >= classes:
                too_large.append(f"{line}: {value}")
        elif label in index:
            value = index[label]
        else:
            bad.add(where, "label not among the training classes", f"{line}: {label}")
            continue
        if not os.path.isfile(path):
            bad.add(where, "missing file", path)
            continue
        paths.append(path)
        labels.append(value)
    if too_large:
        # Not a bad file to skip: the head has too few outputs, or a label is a typo.
        raise SpecError([("$.head.classes", f"{classes}, but {source.listing or source.csv} has labels of "
                                            f"{classes} or more: {_counted('line', too_large)}")])
    if numeric and class_names is None:
        names = [str(i) for i in range(max(labels, default=-1) + 1)]
    if not paths:
        bad.check()  # the reasons, when there are bad files
        raise SpecError([(where, f"no usable images in {source.folder or source.listing or source.csv}")])
    return np.array(paths), np.array(labels, dtype="int32"), names


def _is_integer(label):
    return re.fullmatch(r"-?[0-9]+", str(label)) is not None


def _class_folders(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def _folder_rows(root, where, bad, class_names):
    """`(path, class name, path)` of every image in a class-per-folder tree."""
    rows = []
    found = _class_folders(root)
    for name in sorted(set(found) - set(class_names or found)):
        bad.add(where, "class folder not among the training classes", os.path.join(root, name))
    for name in class_names or found:
        folder = os.path.join(root, name)
        images = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES)) \
            if os.path.isdir(folder) else []
        if not images:
            bad.add(where, "empty class folder", folder)
        rows += [(os.path.join(folder, f), name, os.path.join(folder, f)) for f in images]
    return rows  # an empty folder adds no rows, so (when skipped) no class


def _listing_rows(source, where, bad):
    """`(path, label, "listing:line")` of every line of a Caffe listing."""
    root = source.root or os.path.dirname(source.listing)
    rows = []
    with open(source.listing, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            parts = line.rsplit(maxsplit=1)
            here = f"{source.listing}:{number}"
            if not parts:
                continue
            if len(parts) == 1 or parts[1].lower().endswith(IMAGE_SUFFIXES):
                bad.add(where, "line without a label", here)
                continue
            rows.append((os.path.join(root, parts[0]), parts[1], here))
    return rows


def _csv_rows(source, where, bad):
    """`(path, label, "csv:line")` of every row of a CSV file."""
    root = source.root or os.path.dirname(source.csv)
    try:
        # Blank lines kept, so that row i is line i + 2 of the file.
        frame = pd.read_csv(source.csv, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise SpecError([(f"{where}.csv", f"{source.csv} is not a readable CSV file: {error}")]) from None
    for key in ("path_column", "label_column"):
        column = getattr(source, key)
        if column not in frame.columns:
            raise SpecError([(f"{where}.{key}", f"{source.csv} has no column {column!r}; "
                                                f"its columns: {', '.join(map(str, frame.columns))}")])
    rows = []
    for number, (path, label) in enumerate(frame[[source.path_column, source.label_column]].itertuples(index=False),
                                           start=2):  # line 1 is the header
        here = f"{source.csv}:{number}"
        if not path.strip() and not label.strip():
            continue
        if not label.strip():
            bad.add(where, "line without a label", here)
            continue
        rows.append((os.path.join(root, path), label.strip(), here))
    return rows


def _read_image(path, channels):
    """The image in the file `path`, decoded with `channels` channels (uint8)."""
    return tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)


def _decoded_sizes(paths, channels):
    """The `(height, width)` of each file decoded as training decodes it
    (one parallel pass), `(0, 0)` for a file that does not decode."""
    sizes = np.zeros((len(paths), 2), int)
    if len(paths) == 0:
        return sizes

    def decode(index, path):
        # The shape makes the decode run (an unused decode is pruned).
        return index, tf.shape(_read_image(path, channels))[:2]

    indices = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), np.asarray(paths, dtype=str)))
    decoded = indices.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().batch(4096)
    for batch, shapes in decoded.as_numpy_iterator():
        sizes[batch] = shapes
    return sizes


def _common_size(sizes):
    """The one `(height, width)` of the `sizes` of the image files, for a
    `data.image_size` not given; a `SpecError` when they differ."""
    found, counts = np.unique(sizes, axis=0, return_counts=True)
    if len(found) == 1:
        return tuple(int(side) for side in found[0])
    shown = ", ".join(f"{height}x{width}: {count:,} file{'s' if count != 1 else ''}" for (height, width), count in
                      sorted(zip(found.tolist(), counts.tolist()), key=lambda pair: -pair[1])[:BadFiles.SHOWN])
    more = f", and {len(found) - BadFiles.SHOWN} more sizes" if len(found) > BadFiles.SHOWN else ""
    raise SpecError([("$.data.image_size", f"not given, and the image files have {len(found)} sizes (height x "
                                           f"width: {shown}{more}): set data.image_size to resize them to one")])


def _decoder(size, channels):
    """Image file path -> float32 image of `size` and `channels`: decoded,
    resized (bilinear) when its size differs, and rounded, so that its
    pixels are whole numbers in [0, 255] (bilinear weights sum to 1) and a
    uint8 cache holds them exactly."""
    size = tuple(size)

    def decode(path):
        image = _read_image(path, channels)
        image = tf.cond(tf.reduce_all(tf.shape(image)[:2] == size), lambda: tf.cast(image, "float32"),
                        lambda: tf.round(tf.image.resize(image, size)))
        return tf.ensure_shape(image, (*size, channels))

    return decode
