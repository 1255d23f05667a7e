"""Argument checks that say the rule and the value received, as Keras does.

They are defined in `zoo.lr_policies`, which imports no Keras, so that the
spec loader runs the same checks as the callbacks without importing Keras.
"""

from zoo.lr_policies import integer, number, one_of  # noqa: F401
