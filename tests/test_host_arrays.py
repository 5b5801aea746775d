"""NumPy data reaches the device without an XLA compilation.

``jnp.asarray`` of a NumPy array runs a compiled identity program for every new shape and
dtype (JAX 0.10-0.12); ``bpjax._validate.to_device`` copies it with ``jax.device_put``.
The compilations are counted with ``jax.monitoring``: a deterministic figure.
"""

from __future__ import annotations

import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpjax import modes, rev
from bpjax._validate import to_device

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counting_compilations():
    seen = []

    def listen(event, duration, **_):
        if event == COMPILE_EVENT:
            seen.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_to_device_gives_what_jnp_asarray_gives(dtype):
    for value in (np.arange(6).reshape(2, 3).astype(dtype), dtype(3), np.ones((0, 2), dtype)):
        got, want = to_device(value), jnp.asarray(value)
        assert isinstance(got, jax.Array)
        assert (got.dtype, got.shape, got.weak_type) == (want.dtype, want.shape, want.weak_type)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    cast = to_device(np.linspace(0.0, 1.0, 5), np.float32)
    assert cast.dtype == jnp.float32
    np.testing.assert_array_equal(cast, jnp.asarray(np.linspace(0.0, 1.0, 5), jnp.float32))


def test_to_device_copies_and_passes_jax_values_through():
    # jax.device_put alone aliases most aligned float64 buffers on a CPU (x64 on): a later
    # write to the NumPy array showed through in ~60% of 3,000 tries.
    hosts = [np.zeros(3 + 16 * (k % 7)) for k in range(300)]
    on_device = [to_device(h) for h in hosts]
    for h in hosts:
        h[0] = 5.0
    assert all(float(d[0]) == 0.0 for d in on_device)
    x = jnp.arange(3.0)
    assert to_device(x) is jnp.asarray(x)
    assert to_device(2.0).weak_type and to_device([1, 2]).shape == (2,)


def test_numpy_arrays_of_new_shapes_reach_the_device_without_compiling():
    with counting_compilations() as seen:
        for k in range(3, 8):
            to_device(np.ones((k, 11), np.float64))
            to_device(np.arange(k, dtype=np.int32) + 7, np.int64)
    assert seen == []


def test_a_rule_called_on_numpy_compiles_only_its_own_program():
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((5, 13)), rng.standard_normal((13, 4)), np.zeros(4)
    rev.linear(x, W, b)  # compile the op once for these shapes
    with counting_compilations() as seen:
        rev.linear(x.copy(), W.copy(), b.copy())
    assert seen == []  # new NumPy buffers of the same shapes: nothing compiled to move them


def test_detecting_a_pattern_compiles_nothing():
    with counting_compilations() as seen, warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in range(9, 13):  # a new number of nonzeros each time
            P = modes.sparsity(lambda x: jnp.sin(x[1:] * x[:-1]), np.zeros(n))
            H = modes.hessian_sparsity(lambda x: jnp.sum(x[1:] * x[:-1]), np.zeros(n))
            assert P.nse == 2 * (n - 1) and H.nse == 2 * (n - 1)
    assert seen == []
