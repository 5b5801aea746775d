"""The structures of `experiments/jacobian_structures.py`: their stated patterns are the true
ones, bpjax detects them exactly, and its sparse Jacobians equal `jax.jacfwd`'s."""

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
def test_sparse_jacobian_equals_jacfwd_and_the_stated_pattern(name):
    f, x, pattern = examples.structure(name, dtype=np.float32)
    want = np.asarray(jax.jit(jax.jacfwd(f))(x))
    # The stated pattern is the Jacobian's nonzeros at a random point (no cancellation).
    np.testing.assert_array_equal(want != 0, pattern.toarray())
    got = modes.jacobian(f, x, mode="sparse", sparse_output=True)
    np.testing.assert_allclose(np.asarray(got.todense()), want, rtol=2e-6, atol=2e-6)


def test_unknown_structure_names_the_choices():
    with pytest.raises(ValueError, match="band k=2"):
        examples.structure("band k=3")
