"""Training data as tf.data pipelines."""

import numpy as np
import tensorflow as tf

from zoo.backbones import get_backbone
from zoo.datasets import load_digits


def load_data(data, batch_size, backbone=None):
    """`(train, validation)` tf.data datasets of `(image, label)` batches.

    `builtin: "digits"`: scikit-learn's digits, optionally only `classes`
    (relabelled 0..len(classes)-1 in the order given), shuffled with `seed`
    (images and labels together) before `validation_split` is held out.
    Images are resized to `image_size`, repeated over `channels`, and
    normalized (`normalization`). The training set is reshuffled every epoch;
    both prefetch.
    """
    (x, y), (x_val, y_val) = load_digits(validation_split=data["validation_split"], seed=data["seed"])
    if "classes" in data:
        x, y = _only(x, y, data["classes"])
        x_val, y_val = _only(x_val, y_val, data["classes"])
    prepare = _preparation(data, backbone)
    train = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=data["seed"], reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = (
        tf.data.Dataset.from_tensor_slices((x_val, y_val))
        .batch(batch_size)
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, validation


def _preparation(data, backbone):
    """The per-batch image transform the data section declares."""
    size = data.get("image_size")
    channels = data.get("channels", 1)
    normalization = data.get("normalization", "none")
    preprocess = None
    if normalization == "backbone" and backbone and "name" in backbone:
        preprocess = get_backbone(backbone["name"]).preprocess_input

    def prepare(images, labels):
        if size:
            images = tf.image.resize(images, size)
        if channels == 3:
            images = tf.repeat(images, 3, axis=-1)
        if preprocess is not None:
            images = preprocess(images * 255.0)
        elif isinstance(normalization, dict):
            images = (images - normalization["mean"]) / normalization["std"]
        return images, labels

    return prepare


def _only(x, y, classes):
    keep = np.isin(y, classes)
    relabel = {c: i for i, c in enumerate(classes)}
    return x[keep], np.array([relabel[label] for label in y[keep]], dtype="int32")
