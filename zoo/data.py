"""Training data as tf.data pipelines: built-in digits, image folders,
Caffe-style listing files and CSV files."""

import os

import numpy as np
import pandas as pd
import tensorflow as tf

from zoo.backbones import get_backbone
from zoo.datasets import load_digits, shuffle_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def load_data(data, batch_size, backbone=None):
    """`(train, validation, class_names)`: tf.data datasets of `(image,
    label)` batches and the name of each label.

    Images and labels are shuffled together with `seed` (before
    `validation_split` is held out, and again every epoch for training);
    images are resized to `image_size`, repeated over `channels`, augmented
    (training only) and normalized. Both datasets prefetch.
    """
    if "builtin" in data:
        x, y, x_val, y_val, names = _digits(data)
        train = tf.data.Dataset.from_tensor_slices((x, y))
        validation = tf.data.Dataset.from_tensor_slices((x_val, y_val))
        decode, count = None, len(x)
    else:
        paths, labels, names = read_source(data)
        if "validation" in data:
            val_paths, val_labels, _ = read_source(data["validation"], names)
        else:
            (paths, labels), (val_paths, val_labels) = shuffle_split(
                paths, labels, data["validation_split"], data["seed"])
        train = tf.data.Dataset.from_tensor_slices((paths, labels))
        validation = tf.data.Dataset.from_tensor_slices((val_paths, val_labels))
        decode, count = _decoder(data), len(paths)
    if data.get("shuffle", True):
        train = train.shuffle(count, seed=data["seed"], reshuffle_each_iteration=True)
    train = _pipeline(train, decode, _preparation(data, backbone, training=True), batch_size)
    validation = _pipeline(validation, decode, _preparation(data, backbone, training=False), batch_size)
    return train, validation, names


def _pipeline(dataset, decode, prepare, batch_size):
    if decode is not None:
        dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _digits(data):
    (x, y), (x_val, y_val) = load_digits(validation_split=data["validation_split"], seed=data["seed"])
    classes = data.get("classes", list(range(10)))
    x, y = _only(x, y, classes)
    x_val, y_val = _only(x_val, y_val, classes)
    return x, y, x_val, y_val, [str(c) for c in classes]


def _only(x, y, classes):
    keep = np.isin(y, classes)
    relabel = {c: i for i, c in enumerate(classes)}
    return x[keep], np.array([relabel[label] for label in y[keep]], dtype="int32")


def read_source(source, class_names=None):
    """`(paths, labels, class_names)` of a folder, listing or CSV source.

    Labels that are not integers are class names, numbered in sorted order
    (or by `class_names`, for validation data)."""
    if "folder" in source:
        root = source["folder"]
        names = class_names or sorted(
            d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        rows = [(os.path.join(root, name, f), name) for name in names
                if os.path.isdir(os.path.join(root, name))
                for f in sorted(os.listdir(os.path.join(root, name)))
                if f.lower().endswith(IMAGE_SUFFIXES)]
    elif "listing" in source:
        root = source.get("root", os.path.dirname(source["listing"]))
        with open(source["listing"]) as f:
            pairs = [line.rsplit(maxsplit=1) for line in f if line.strip()]
        rows = [(os.path.join(root, path), label) for path, label in pairs]
    else:
        root = source.get("root", os.path.dirname(source["csv"]))
        frame = pd.read_csv(source["csv"])
        columns = source.get("path_column", "path"), source.get("label_column", "label")
        rows = [(os.path.join(root, str(p)), str(label)) for p, label in frame[list(columns)].itertuples(index=False)]
    if not rows:
        raise ValueError(f"No images found in {source}")
    paths, labels = zip(*rows)
    # Integer labels (Caffe listings) keep their values; names are numbered
    # in sorted order, or as the training data numbered them.
    numeric = "folder" not in source and all(str(label).lstrip("-").isdigit() for label in labels)
    if class_names is None:
        class_names = sorted({str(int(l)) for l in labels}, key=int) if numeric else sorted(set(labels))
    index = {name: int(name) if numeric else i for i, name in enumerate(class_names)}
    labels = [str(int(label)) if numeric else label for label in labels]
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} are not among the training classes {class_names[:10]}")
    return np.array(paths), np.array([index[label] for label in labels], dtype="int32"), class_names


def _decoder(data):
    size = data["image_size"]

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=data.get("channels", 3),
                                   expand_animations=False)
        image = tf.image.resize(tf.cast(image, "float32") / 255.0, size)
        return image, label

    return decode


def _preparation(data, backbone, training):
    """The per-batch transform: resize, channels, crop, flip, normalization."""
    size = data.get("image_size") if "builtin" in data else None  # files are resized on decode
    to_rgb = "builtin" in data and data.get("channels", 1) == 3
    augment = data.get("augment", {})
    crop = augment.get("random_crop")
    flip = augment.get("flip")
    normalization = data.get("normalization", "none")
    preprocess = None
    if normalization == "backbone":
        preprocess = get_backbone(backbone["name"]).preprocess_input
    seed = data["seed"]

    def prepare(images, labels):
        if size:
            images = tf.image.resize(images, size)
        if to_rgb:
            images = tf.repeat(images, 3, axis=-1)
        if crop:
            if training:
                shape = tf.shape(images)
                images = tf.image.random_crop(images, [shape[0], crop[0], crop[1], shape[3]], seed=seed)
            else:
                images = _center_crop(images, crop)
        if flip and training:
            if flip in ("horizontal", "horizontal_and_vertical"):
                images = _random_flip(images, axis=2, seed=seed)
            if flip in ("vertical", "horizontal_and_vertical"):
                images = _random_flip(images, axis=1, seed=seed + 1)
        if preprocess is not None:
            images = preprocess(images * 255.0)
        elif isinstance(normalization, dict):
            images = (images - normalization["mean"]) / normalization["std"]
        return images, labels

    return prepare


def _center_crop(images, crop):
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    top, left = (height - crop[0]) // 2, (width - crop[1]) // 2
    return images[:, top:top + crop[0], left:left + crop[1], :]


def _random_flip(images, axis, seed):
    # One coin per image, so a batch mixes flipped and unflipped images.
    flip = tf.random.uniform([tf.shape(images)[0], 1, 1, 1], seed=seed) < 0.5
    return tf.where(flip, tf.reverse(images, [axis]), images)


def image_shape(dataset):
    """The `(height, width, channels)` of a batched dataset's images."""
    return tuple(dataset.element_spec[0].shape[1:])
