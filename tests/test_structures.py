"""The structures of `experiments/jacobian_structures.py`: their stated patterns are the true
ones, bpjax detects them exactly, and its sparse Jacobians equal JAX's derivatives."""

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from bpjax import modes
from bpjax.modes import examples


@pytest.mark.parametrize("name", list(examples.STRUCTURES))
def test_detected_pattern_is_the_stated_one(name):
    f, x, pattern = examples.structure(name, dtype=np.float32)
    detected = modes.sparsity(f, x)
    rows, cols = np.asarray(detected.indices).T
    found = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), pattern.shape)
    assert (found != pattern).nnz == 0, name


@pytest.mark.parametrize("name", ["9-point 32x128", "block band 16", "power-law graph d=4"])
def test_sparse_jacobian_equals_jax_and_the_stated_pattern(name):
    f, x, pattern = examples.structure(name, dtype=np.float32)
    got = modes.jacobian(f, x, mode="sparse", sparse_output=True)
    rows, cols = np.asarray(got.indices).T
    stored = sp.csr_array((np.asarray(got.data), (rows, cols)), got.shape)
    # It stores the stated pattern, every entry nonzero at this random point (the stated
    # pattern is the Jacobian's nonzeros there: no cancellation).
    assert (stored.astype(bool) != pattern).nnz == 0
    assert np.all(np.asarray(got.data) != 0)
    # Every entry equals JAX's: the products J V and Uᵀ J with random V, U (8 columns each)
    # by jax.jvp and jax.vjp. A wrong entry anywhere, or a nonzero JAX has outside the
    # pattern, changes them with probability 1; 16 products instead of a dense jacfwd's
    # n = 4096 keep this check cheap.
    rng = np.random.default_rng(0)
    V = rng.standard_normal((x.size, 8)).astype(np.float32)
    U = rng.standard_normal((got.shape[0], 8)).astype(np.float32)
    JV = np.asarray(jax.jit(jax.vmap(lambda v: jax.jvp(f, (x,), (v,))[1], 1, 1))(V))
    _, pull = jax.vjp(f, x)
    UJ = np.asarray(jax.jit(jax.vmap(lambda u: pull(u)[0], 1, 1))(U))
    scale = np.abs(stored) @ np.abs(V), np.abs(stored).T @ np.abs(U)
    np.testing.assert_array_less(np.abs(stored @ V - JV), 2e-6 * (1 + scale[0]))
    np.testing.assert_array_less(np.abs(stored.T @ U - UJ), 2e-6 * (1 + scale[1]))


def test_unknown_structure_names_the_choices():
    with pytest.raises(ValueError, match="band k=2"):
        examples.structure("band k=3")
