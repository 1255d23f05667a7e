"""A small CNN for tiny inputs such as the 8x8 digits."""

import keras
from keras import layers


def small_cnn(input_shape=(8, 8, 1), classes=10, width=32, name="small_cnn"):
    """Conv-BN-ReLU x2, max-pool, conv-BN-ReLU, global average pool, softmax.

    Args:
        input_shape: Tuple. Input image shape. Defaults to `(8, 8, 1)`.
        classes: Integer. Output classes. Defaults to `10`.
        width: Integer. Filters of the first two convolutions (the third has
            twice as many). Defaults to `32`.
    """
    def conv_block(x, filters, block):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        # momentum 0.9: a few hundred steps are enough for the running statistics.
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        return layers.ReLU(name=f"relu{block}")(x)

    inputs = keras.Input(input_shape, name="image")
    x = conv_block(inputs, width, 1)
    x = conv_block(x, width, 2)
    x = layers.MaxPooling2D(name="pool")(x)
    x = conv_block(x, 2 * width, 3)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def preprocess_input(x, data_format=None):
    """The small CNN's own input preprocessing, as each keras.applications
    module has one: none, `x` as given."""
    return x
