"""Training data as tf.data pipelines: built-in digits, image folders,
Caffe-style listing files and CSV files.

Every random choice of the pipeline (the order of an epoch, a crop, a flip)
is a stateless random op keyed on the run's seed, the epoch and the batch's
position in it. The batches of epoch `e` are therefore the same in every
process, whether a run starts at epoch 0 or resumes at `e`.
"""

import math
import os

import numpy as np
import pandas as pd
import tensorflow as tf

from zoo.datasets import load_digits, shuffle_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Salts that give each random op of a batch its own stream.
_CROP, _FLIP_HORIZONTAL, _FLIP_VERTICAL = 1, 2, 3


def load_data(data, seed, channels, preprocess=None):
    """The `ImageData` of a `Data` section.

    Args:
        data: `zoo.sections.Data`.
        seed: Integer. Keys the validation split, every epoch's order and
            the augmentation.
        channels: Integer. The model's input channels: the images' channels
            unless `data.channels` says otherwise.
        preprocess: The backbone's `preprocess_input`, for
            `normalization: "backbone"`.
    """
    channels = data.channels or channels
    if data.builtin:
        (x, y), (x_val, y_val) = load_digits(validation_split=data.validation_split, seed=seed)
        classes = list(data.classes or range(10))
        train, validation = _only(x, y, classes), _only(x_val, y_val, classes)
        names = [str(c) for c in classes]
        decode = None
    else:
        paths, labels, names = read_source(data)
        if data.validation is not None:
            val_paths, val_labels, _ = read_source(data.validation, names)
            train, validation = (paths, labels), (val_paths, val_labels)
        else:
            train, validation = shuffle_split(paths, labels, data.validation_split, seed)
        decode = _decoder(data.image_size, channels)
    return ImageData(data, seed, channels, train, validation, names, decode, preprocess)


class ImageData:
    """Training and validation images of a spec, batched on demand.

    Attributes:
        class_names: The name of each label.
        train_size: The number of training images.
    """

    def __init__(self, data, seed, channels, train, validation, class_names, decode, preprocess):
        self._data, self._seed = data, seed
        self._train, self._validation = train, validation
        self._decode = decode
        self._preprocess = preprocess
        # Gray images (the digits) are repeated over RGB when 3 channels are asked for.
        self._to_rgb = data.builtin is not None and channels == 3
        self.class_names = class_names
        self.train_size = len(train[0])

    def steps(self, batch_size):
        """Training batches per epoch (the last one may be smaller)."""
        return math.ceil(self.train_size / batch_size)

    def train(self, batch_size, first_epoch, epochs):
        """The training batches of epochs `first_epoch ... first_epoch + epochs - 1`,
        one after the other: `epochs * steps(batch_size)` batches."""
        x, y = (tf.constant(a) for a in self._train)
        size = self.train_size

        def one_epoch(epoch):
            key = tf.random.experimental.stateless_fold_in(tf.constant([self._seed, 0], tf.int64), epoch)
            if self._data.shuffle:
                order = tf.argsort(tf.random.stateless_uniform([size], seed=key))
            else:
                order = tf.range(size)
            batches = self._batched(tf.data.Dataset.from_tensor_slices(order).map(
                lambda i: (tf.gather(x, i), tf.gather(y, i))), batch_size)
            return batches.enumerate().map(
                lambda position, batch: self._prepare(
                    *batch, key=tf.random.experimental.stateless_fold_in(key, position)),
                num_parallel_calls=tf.data.AUTOTUNE)

        epochs = tf.data.Dataset.range(first_epoch, first_epoch + epochs)
        return epochs.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)

    def validation(self, batch_size):
        """The validation batches, in a fixed order, without augmentation."""
        batches = self._batched(tf.data.Dataset.from_tensor_slices(self._validation), batch_size)
        return batches.map(lambda images, labels: self._prepare(images, labels, key=None),
                           num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    @property
    def image_shape(self):
        """The `(height, width, channels)` of the images the model gets."""
        return tuple(self.validation(1).element_spec[0].shape[1:])

    def _batched(self, dataset, batch_size):
        if self._decode is not None:
            dataset = dataset.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(batch_size)

    def _prepare(self, images, labels, key):
        """Resize, channels, crop, flip and normalize a batch; `key` None
        means validation (central crops, no flips)."""
        data = self._data
        if data.builtin and data.image_size:  # files are resized on decode
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
        if data.normalization == "backbone":
            images = self._preprocess(images * 255.0)
        elif not isinstance(data.normalization, str):
            images = (images - data.normalization.mean) / data.normalization.std
        return images, labels


def _salted(key, salt):
    return tf.random.experimental.stateless_fold_in(key, salt)


def _random_flip(images, axis, seed):
    # One coin per image, so a batch mixes flipped and unflipped images.
    flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed=seed) < 0.5
    return tf.where(flip, tf.reverse(images, [axis]), images)


def _only(x, y, classes):
    keep = np.isin(y, classes)
    relabel = {c: i for i, c in enumerate(classes)}
    return x[keep], np.array([relabel[label] for label in y[keep]], dtype="int32")


def read_source(source, class_names=None):
    """`(paths, labels, class_names)` of a folder, listing or CSV `Source`.

    Labels that are not integers are class names, numbered in sorted order
    (or by `class_names`, for validation data)."""
    if source.folder:
        root = source.folder
        names = class_names or sorted(
            d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        rows = [(os.path.join(root, name, f), name) for name in names
                if os.path.isdir(os.path.join(root, name))
                for f in sorted(os.listdir(os.path.join(root, name)))
                if f.lower().endswith(IMAGE_SUFFIXES)]
    elif source.listing:
        root = source.root or os.path.dirname(source.listing)
        with open(source.listing) as f:
            pairs = [line.rsplit(maxsplit=1) for line in f if line.strip()]
        rows = [(os.path.join(root, path), label) for path, label in pairs]
    else:
        root = source.root or os.path.dirname(source.csv)
        frame = pd.read_csv(source.csv)
        columns = [source.path_column, source.label_column]
        rows = [(os.path.join(root, str(p)), str(label)) for p, label in frame[columns].itertuples(index=False)]
    if not rows:
        raise ValueError(f"No images found in {source}")
    paths, labels = zip(*rows)
    # Integer labels (Caffe listings) keep their values; names are numbered
    # in sorted order, or as the training data numbered them.
    numeric = not source.folder and all(str(label).lstrip("-").isdigit() for label in labels)
    if class_names is None:
        class_names = sorted({str(int(l)) for l in labels}, key=int) if numeric else sorted(set(labels))
    index = {name: int(name) if numeric else i for i, name in enumerate(class_names)}
    labels = [str(int(label)) if numeric else label for label in labels]
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} are not among the training classes {class_names[:10]}")
    return np.array(paths), np.array([index[label] for label in labels], dtype="int32"), class_names


def _decoder(size, channels):
    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        image = tf.image.resize(tf.cast(image, "float32") / 255.0, size)
        return image, label

    return decode
