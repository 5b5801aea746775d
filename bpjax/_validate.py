"""Input checks shared by the rule table, the models and the tools.

Every check raises before JAX traces anything, so a user sees which argument was wrong, its
shape or dtype, and what to do about it, instead of an XLA error from deep inside a trace.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def host_copy(value, dtype=None):
    """A NumPy array or scalar copied on the host (cast to ``dtype`` where given); anything
    else unchanged. Hand this, not the user's array, to ``jax.device_put``: on a CPU it may
    alias a NumPy buffer instead of copying it (1,852 of 3,000 aligned float64 arrays here),
    so a later write to the user's array, or a step donating the placed one, would reach
    the other; ``device_put(..., may_alias=False)`` compiles a copy instead."""
    if isinstance(value, np.ndarray | np.generic):
        return np.array(value, dtype=dtype, copy=True)
    return value


def to_device(value, dtype=None):
    """``value`` as a JAX array, without compiling anything for a NumPy array.

    ``jnp.asarray`` of a NumPy array or scalar (JAX 0.10-0.12) runs a compiled identity
    program (``lax.stage``), and converting a dtype a compiled cast: one XLA compilation
    for every new shape and dtype, 10-30 ms each on a 2-core Xeon. Here the array's
    :func:`host_copy` is handed to ``jax.device_put``, which compiles nothing; same dtype,
    shape and weak type as ``jnp.asarray``. Anything else (JAX arrays, tracers, Python
    numbers and lists) goes to ``jnp.asarray``.
    """
    if isinstance(value, np.ndarray | np.generic):
        return jax.device_put(host_copy(value, dtype))
    return jnp.asarray(value, dtype)


def as_array(op: str, name: str, value):
    """Return ``value`` as a JAX array (tracers pass through), or raise a TypeError."""
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        return to_device(value)
    if isinstance(value, int | float | list | tuple):
        return jnp.asarray(value)
    raise TypeError(
        f"{op}: {name} must be an array, got {type(value).__name__}; "
        f"pass a jax.numpy or numpy array"
    )


def require_float(op: str, name: str, x) -> None:
    """Raise a TypeError unless ``x`` has a floating dtype."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{op}: {name} must have a floating dtype to be differentiated, got {x.dtype} "
            f"({name}.shape={tuple(x.shape)}); cast it with {name}.astype(jnp.float32)"
        )


def require_ndim(op: str, name: str, x, ndim: int, layout: str) -> None:
    """Raise a ValueError unless ``x.ndim == ndim``; ``layout`` names the expected axes."""
    if x.ndim != ndim:
        raise ValueError(
            f"{op}: {name} must be {ndim}-D {layout}, got {name}.shape={tuple(x.shape)}"
        )


def require_bool(op: str, name: str, value) -> None:
    """Raise a TypeError unless ``value`` is a Python bool (a flag, not an array)."""
    if not isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}")


def check_label_range(op: str, labels, classes: int) -> None:
    """Raise a ValueError naming the rows whose class id lies outside ``[0, classes)``.

    ``labels`` holds values (a NumPy array): called eagerly on concrete labels, and at run
    time from a host callback when a loss is asked to ``check_labels`` under ``jit``.
    """
    values = np.asarray(labels).reshape(-1)
    bad = np.flatnonzero((values < 0) | (values >= classes))
    if bad.size:
        raise ValueError(
            f"{op}: integer labels must lie in [0, {classes}) for {classes} classes, got "
            f"values in [{int(values.min())}, {int(values.max())}]; {bad.size} out of range "
            f"at rows {bad[:10].tolist()}{' ...' if bad.size > 10 else ''} (values "
            f"{values[bad[:10]].tolist()})"
        )


def is_concrete(x) -> bool:
    """True when ``x`` holds values now (not a tracer under jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_labels(op: str, scores_name: str, scores, labels) -> None:
    """Validate labels against scores of shape ``(..., classes)``.

    Integer labels must have shape ``scores.shape[:-1]`` and, when concrete, lie in
    ``[0, classes)``. Floating labels (one-hot or probabilities) must match ``scores.shape``.
    """
    classes = scores.shape[-1]
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if tuple(labels.shape) != tuple(scores.shape[:-1]):
            raise ValueError(
                f"{op}: integer labels must have shape {tuple(scores.shape[:-1])} "
                f"(one class id per row of {scores_name}), got labels.shape="
                f"{tuple(labels.shape)} with {scores_name}.shape={tuple(scores.shape)}"
            )
        if is_concrete(labels) and labels.size:
            # numpy, not jnp: inside a jit trace jnp.min would return a tracer even for
            # labels that are concrete constants closed over by the traced function.
            check_label_range(op, np.asarray(labels), classes)
    elif jnp.issubdtype(labels.dtype, jnp.floating):
        if tuple(labels.shape) != tuple(scores.shape):
            raise ValueError(
                f"{op}: one-hot/probability labels must have the shape of {scores_name} "
                f"{tuple(scores.shape)}, got labels.shape={tuple(labels.shape)}"
                + (
                    f"; labels have {labels.shape[-1]} classes but {scores_name} has {classes}"
                    if labels.ndim == scores.ndim
                    else ""
                )
            )
    else:
        raise TypeError(
            f"{op}: labels must be integer class ids or floating one-hot/probabilities, "
            f"got dtype {labels.dtype}"
        )


def is_int(value) -> bool:
    """True for a Python or NumPy integer and False for a bool.

    ``bool`` is a subclass of ``int`` in Python, so without this ``depth=True`` would
    silently mean ``depth=1``.
    """
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value) -> bool:
    """True for a Python or NumPy integer or float, and False for a bool."""
    return is_int(value) or isinstance(value, float | np.floating)


def require_int(op: str, name: str, value, *, minimum: int = 1) -> None:
    """Raise a ValueError unless ``value`` is an integer (not a bool) ``>= minimum``."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{op}: {name} must be an integer >= {minimum}, got {value!r}")
