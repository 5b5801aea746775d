"""Data: scikit-learn's bundled digits (no download), with a synthetic stand-in.

``digits()`` returns a fixed train/test split of the 1,797 8×8 handwritten digits that ship
inside scikit-learn, pixels scaled to [0, 1]. Without scikit-learn it falls back to a
synthetic 10-class problem of the same shape and says so in ``Dataset.name``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Dataset(NamedTuple):
    """A classification data set as device arrays.

    Attributes:
      x_train: ``(n_train, d)`` float32.
      y_train: ``(n_train,)`` int32 class ids.
      x_test: ``(n_test, d)``.
      y_test: ``(n_test,)``.
      classes: number of classes.
      name: ``"digits"`` or ``"synthetic"``.
    """

    x_train: jnp.ndarray
    y_train: jnp.ndarray
    x_test: jnp.ndarray
    y_test: jnp.ndarray
    classes: int
    name: str


def _split(x, y, *, test_fraction, seed, classes, name):
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    as_x = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    as_y = lambda a: jnp.asarray(a, jnp.int32)  # noqa: E731
    return Dataset(as_x(x[train]), as_y(y[train]), as_x(x[test]), as_y(y[test]), classes, name)


def synthetic(*, n=1797, d=64, classes=10, seed=0, test_fraction=0.2) -> Dataset:
    """Gaussian class clusters in ``d`` dimensions, shaped like digits (a stand-in)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d))
    y = rng.integers(0, classes, size=n)
    x = centers[y] + 1.5 * rng.standard_normal((n, d))
    return _split(x, y, test_fraction=test_fraction, seed=seed, classes=classes, name="synthetic")


def digits(*, test_fraction=0.2, seed=0) -> Dataset:
    """The 8×8 digits (1,797 images, 64 features, 10 classes), split with a fixed seed.

    Default split: 1,437 train / 360 test images. Falls back to :func:`synthetic` when
    scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return synthetic(seed=seed, test_fraction=test_fraction)
    bunch = load_digits()
    x = bunch.data / 16.0
    return _split(
        x, bunch.target, test_fraction=test_fraction, seed=seed, classes=10, name="digits"
    )
