"""Data: scikit-learn's bundled digits (no download), with a synthetic stand-in.

``digits()`` returns a fixed train/test split of the 1,797 8×8 handwritten digits that ship
inside scikit-learn, pixels scaled to [0, 1]. Without scikit-learn it substitutes a synthetic
10-class problem of the same shape, with a warning that says so (and ``Dataset.name`` is
``"synthetic"``), or raises with ``synthetic_fallback=False``.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from bpjax import _validate

__all__ = [
    "digits",
    "synthetic",
    "Dataset",
]


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


def _check_fraction(test_fraction) -> None:
    if not _validate.is_number(test_fraction):
        raise TypeError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"test_fraction must lie in (0, 1) (the share of examples held out for testing), "
            f"got {test_fraction}"
        )


def _split(x, y, *, test_fraction, seed, classes, name):
    _check_fraction(test_fraction)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    if not 0 < n_test < len(x):
        raise ValueError(
            f"test_fraction={test_fraction} of {len(x)} examples leaves {n_test} for testing "
            f"and {len(x) - n_test} for training; both need at least one"
        )
    test, train = order[:n_test], order[n_test:]
    as_x = lambda a: _validate.to_device(a, np.float32)  # noqa: E731
    as_y = lambda a: _validate.to_device(a, np.int32)  # noqa: E731
    return Dataset(as_x(x[train]), as_y(y[train]), as_x(x[test]), as_y(y[test]), classes, name)


def synthetic(*, n=1797, d=64, classes=10, seed=0, test_fraction=0.2) -> Dataset:
    """Gaussian class clusters in ``d`` dimensions, shaped like digits (a stand-in)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d))
    y = rng.integers(0, classes, size=n)
    x = centers[y] + 1.5 * rng.standard_normal((n, d))
    return _split(x, y, test_fraction=test_fraction, seed=seed, classes=classes, name="synthetic")


def digits(*, test_fraction=0.2, seed=0, synthetic_fallback=True) -> Dataset:
    """The 8×8 digits (1,797 images, 64 features, 10 classes), split with a fixed seed.

    Args:
      test_fraction: share of the images held out, in (0, 1). Default split: 1,438 train /
        359 test images.
      seed: seed of the split.
      synthetic_fallback: without scikit-learn, substitute :func:`synthetic` with a warning
        (True) or raise ``ImportError`` (False).
    """
    _check_fraction(test_fraction)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        if not synthetic_fallback:
            raise ImportError(
                "digits() needs scikit-learn for the real data: pip install scikit-learn "
                "(or make venv, whose experiments extra has it)"
            ) from None
        warnings.warn(
            "scikit-learn is not installed, so digits() returns a SYNTHETIC stand-in (Gaussian "
            "class clusters shaped like digits, Dataset.name='synthetic'), not the real "
            "images; pip install scikit-learn for the real data",
            stacklevel=2,
        )
        return synthetic(seed=seed, test_fraction=test_fraction)
    bunch = load_digits()
    x = bunch.data / 16.0
    return _split(
        x, bunch.target, test_fraction=test_fraction, seed=seed, classes=10, name="digits"
    )
