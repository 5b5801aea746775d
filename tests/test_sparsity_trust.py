"""Sparsity that never misses a nonzero: one regression test per class of failure found by
replaying a peer's test suite (custom derivative rules, infinite local derivatives, while
loops, rules that were looser than they need be), and a property test over random
programs of the primitives the interpreter handles."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
import pytest
from conftest import dense_pattern

from bpjax import modes


def _pattern(f, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", modes.SparsityWarning)
        return dense_pattern(modes.sparsity(f, x))


def _flat_jacobian(jac, f, x):
    J = jac(lambda v: jnp.ravel(f(v)))(x)
    return np.asarray(J).reshape(-1, x.size)


def _all_modes(f, x):
    """The Jacobian by every mode that computes it from the pattern, flattened (m, n)."""
    got = {}
    for mode in ("sparse", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", modes.SparsityWarning)
            got[mode] = modes.jacobian(lambda v: jnp.ravel(f(v)), x, mode=mode)
            got[f"{mode} fn"] = modes.jacobian_fn(lambda v: jnp.ravel(f(v)), x, mode=mode)(x)
    return {k: np.asarray(v).reshape(-1, x.size) for k, v in got.items()}


# --- class 1: custom_jvp / custom_vjp rules that read other elements than the primal -------


@jax.custom_jvp
def _shifted(x):
    return x[:2]


@_shifted.defjvp
def _shifted_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return x[:2], 2.0 * t[1:3] * x[:2]


@jax.custom_jvp
def _fast_rsqrt(x):
    # A bit-level 1/sqrt(x): the primal has a zero derivative (integer ops), the rule not.
    i = jax.lax.bitcast_convert_type(x, jnp.int64)
    y = jax.lax.bitcast_convert_type(jnp.int64(0x5FE6EB50C7B537A9) - (i >> 1), jnp.float64)
    return y * (1.5 - 0.5 * x * y * y)


@_fast_rsqrt.defjvp
def _fast_rsqrt_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _fast_rsqrt(x), -0.5 * x**-1.5 * t


@jax.custom_vjp
def _reversed_rule(x):
    return 2.0 * x


_reversed_rule.defvjp(lambda x: (2.0 * x, x), lambda x, ct: (ct[::-1] * x,))


@pytest.mark.parametrize(
    "f, jac",
    [
        (lambda x: _shifted(x) + x[3], jax.jacfwd),
        (lambda x: _fast_rsqrt(x) * x[::-1], jax.jacfwd),
        (lambda x: _reversed_rule(x) + x, jax.jacrev),
        (lambda x: jax.nn.relu(x) * jax.nn.softmax(x[:2]).sum(), jax.jacfwd),
    ],
    ids=["custom_jvp reads x[1:3]", "custom_jvp bit-cast rsqrt", "custom_vjp reversed", "jax.nn"],
)
def test_custom_rules_give_the_pattern_differentiation_uses(f, jac):
    x = jnp.array([0.7, 1.3, 2.1, 0.4])
    J = _flat_jacobian(jac, f, x)
    P = _pattern(f, x)
    assert not (J != 0)[~P].any(), "pattern misses a nonzero of the rule"
    for mode, got in _all_modes(f, x).items():
        np.testing.assert_allclose(got, J, rtol=1e-12, atol=1e-12, err_msg=mode)


def test_custom_jvp_rule_pattern_is_exact_not_dense():
    x = jnp.array([0.7, 1.3, 2.1, 0.4])
    np.testing.assert_array_equal(
        _pattern(_shifted, x), [[False, True, False, False], [False, False, True, False]]
    )
    np.testing.assert_array_equal(_pattern(_reversed_rule, x), np.eye(4, dtype=bool)[::-1])


# --- class 2: exact zeros outside the pattern where a local derivative is infinite ----------


NONFINITE = {
    "sqrt at 0": (lambda x: jnp.sqrt(x) * x[::-1], [0.0, 1.0, 4.0]),
    "where over an infinite branch": (
        lambda x: jnp.where(x > 0, jnp.sqrt(jnp.abs(x)), 0.0) * jnp.roll(x, 1),
        [0.0, 1.0, 4.0],
    ),
    "rsqrt at 0": (lambda x: jax.lax.rsqrt(x) + x[0], [0.0, 1.0, 4.0]),
    "erfinv at 1": (lambda x: jsp.erfinv(x) * x[1], [1.0, 0.5, -1.0]),
    "arccosh at 1": (lambda x: jnp.arccosh(x) + x[::-1], [1.0, 2.0, 3.0]),
    "x ** y at 0": (lambda x: x ** x[::-1], [0.0, 0.5, 2.0]),
    "cholesky": (lambda x: jnp.linalg.cholesky(jnp.diag(x)).ravel(), [0.0, 1.0, 2.0]),
    "betainc": (lambda x: jsp.betainc(0.5, 2.0, x) * x[::-1], [0.0, 0.5, 0.9]),
}


@pytest.mark.parametrize("case", NONFINITE)
def test_entries_outside_the_pattern_are_exact_zeros(case):
    f, x = NONFINITE[case]
    x = jnp.asarray(x)
    P = _pattern(f, x)
    assert not P.all(), "the pattern should be tighter than dense here"
    for mode, J in _all_modes(f, x).items():
        outside = J[~P]
        assert np.array_equal(outside, np.zeros_like(outside)), (mode, J)


# --- class 3: while loops -------------------------------------------------------------------


def _local_while(x):
    # A tolerance-driven loop: the trip count depends on x, so it is unknown at trace time.
    def body(c):
        v, k = c
        return 0.5 * v + 0.25 * (jnp.roll(v, 1) + jnp.roll(v, -1)) * jnp.sin(v), k + 1

    return jax.lax.while_loop(lambda c: (c[1] < 3) & (jnp.max(c[0]) > 0.1), body, (x, 0))[0]


def _fixed_trip_while(x):
    body = lambda c: (c[0] + 0.1 * jnp.roll(c[0], 1) ** 2, c[1] + 1)  # noqa: E731
    return jax.lax.while_loop(lambda c: c[1] < 2, body, (x, 0))[0]


def test_while_loops_get_a_pattern_and_forward_products():
    x = jnp.linspace(0.5, 1.5, 12)
    P = _pattern(_fixed_trip_while, x)  # two steps of a one-element shift: a band of 3
    expected = np.zeros((12, 12), bool)
    for i in range(12):
        expected[i, [i, (i - 1) % 12, (i - 2) % 12]] = True
    np.testing.assert_array_equal(P, expected)
    for f in (_fixed_trip_while, _local_while):
        J = _flat_jacobian(jax.jacfwd, f, x)
        assert not (J != 0)[~_pattern(f, x)].any()
        for mode, got in _all_modes(f, x).items():
            np.testing.assert_allclose(got, J, rtol=1e-12, atol=1e-14, err_msg=mode)
    for f in (_fixed_trip_while, _local_while):
        assert modes.jacobian_fn(f, x, mode="auto").method in ("fwd", "columns")
    choice = modes.choose_mode(_fixed_trip_while, x)
    assert "while_loop, which has no reverse mode" in choice.reason


def test_while_loops_refuse_reverse_mode_up_front():
    x = jnp.linspace(0.5, 1.5, 6)
    with pytest.raises(TypeError, match="while_loop.*mode='fwd'"):
        modes.jacobian(_local_while, x, mode="sparse", coloring="rows")


def test_a_while_loop_inside_a_custom_vjp_keeps_reverse_mode():
    @jax.custom_vjp
    def fixed_point(x):
        return jax.lax.while_loop(lambda v: jnp.max(jnp.abs(v)) > 1.0, lambda v: 0.5 * v, x)

    fixed_point.defvjp(lambda x: (fixed_point(x), None), lambda _, ct: (0.5 * ct,))
    x = jnp.linspace(0.5, 3.0, 5)
    np.testing.assert_array_equal(_pattern(fixed_point, x), np.eye(5, dtype=bool))
    J = modes.jacobian(fixed_point, x, mode="auto")
    np.testing.assert_allclose(J, 0.5 * np.eye(5))


# --- class 4: exact rules where the structure is static ----------------------------------------


@pytest.mark.parametrize(
    "f, n, slack",
    [
        (lambda x: jax.lax.scan(lambda c, a: (c * a, c + a), x[0], x)[1], 6, 1.0),
        (lambda x: jax.lax.scan(lambda c, a: (c + a, c * a), 1.0, x, reverse=True)[1], 6, 1.0),
        # which element lands at each rank depends on the values: any of its line may
        (lambda x: jax.lax.top_k(x.reshape(2, 4), 2)[0], 8, 4.0),
        (lambda x: jnp.tile(x, 2) * jnp.repeat(x, 2), 5, 1.0),
        (lambda x: jnp.linalg.cholesky(jnp.outer(x, x) + jnp.eye(4)), 4, 1.0),
        (lambda x: jax.lax.fori_loop(0, 3, lambda i, v: v + x[i] * v[::-1], x), 5, 1.0),
        # a start not known at trace time: each output reads one of a band of L - s + 1
        (lambda x: jax.lax.dynamic_slice(x, (jnp.argmax(x[:3]),), (6,)), 8, 3.0),
        (lambda x: jax.lax.dynamic_update_slice(x, x[:2] ** 2, (jnp.argmax(x),)), 8, 3.0),
        (lambda x: jnp.convolve(x, jnp.array([1.0, 0.0, 2.0]), mode="same"), 9, 1.0),
        (
            lambda x: jax.lax.conv_general_dilated(
                x.reshape(2, 4, 4, 4),
                jnp.arange(1.0, 17.0).reshape(2, 2, 2, 2),
                (1, 1),
                [(1, 0), (0, 1)],
                rhs_dilation=(2, 1),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=2,
            ),
            128,
            1.0,
        ),
        (
            lambda x: jax.lax.conv_general_dilated(
                x[:20].reshape(1, 1, 20), x[20:].reshape(1, 1, 3), (2,), [(1, 1)], (2,)
            ),
            23,
            1.0,
        ),
        (lambda x: jnp.concatenate([a.ravel() for a in jnp.linalg.qr(x.reshape(4, 3))]), 12, 1.0),
        (
            lambda x: jnp.concatenate(
                [a.ravel() for a in jnp.linalg.qr(x.reshape(2, 3, 3), mode="complete")]
            ),
            18,
            1.0,
        ),
    ],
    ids=[
        "scan",
        "reverse scan",
        "top_k",
        "tile",
        "cholesky",
        "fori_loop",
        "dslice",
        "dupdate",
        "convolve",
        "conv groups dilation",
        "conv traced kernel",
        "qr",
        "qr complete batched",
    ],
)
def test_static_structures_have_exact_patterns(f, n, slack):
    x = jnp.linspace(0.3, 1.7, n)
    with warnings.catch_warnings():
        warnings.simplefilter("error", modes.SparsityWarning)  # no conservative fallback
        P = dense_pattern(modes.sparsity(f, x))
    true = np.zeros_like(P)
    jac = jax.jit(jax.jacfwd(f))
    for seed in range(3):
        point = jax.random.uniform(jax.random.key(seed), (n,), minval=0.2, maxval=2.0)
        true |= np.asarray(jac(point)).reshape(-1, n) != 0
    assert not (true & ~P).any()
    assert P.sum() <= slack * true.sum(), (P.sum(), true.sum())


_MASK = jnp.array([1.0, 0.0, 2.0, 0.0])


@pytest.mark.parametrize(
    "f",
    [
        lambda x: x * _MASK,  # a constant zero factor
        lambda x: jnp.array([0.0, 1.0, 0.0, 3.0]) / x,  # a constant zero numerator
        lambda x: jax.lax.integer_pow(x, 0) + jnp.floor(x) * x,  # zero derivatives
        lambda x: jnp.round(x) + jnp.ceil(x) * jnp.sign(x[::-1]),
        lambda x: jnp.stack([x[:2], x[2:]]).ravel() * jnp.stack([x, x[::-1]], axis=1).sum(1)[0],
        lambda x: jnp.concatenate(jnp.unstack(x.reshape(2, 2)[::-1], axis=1)),
        lambda x: jnp.where(jnp.array([True, False, True, False]), x, x[::-1] ** 2),
    ],
    ids=["x*mask", "0/x", "x**0, floor", "round, ceil, sign", "stack", "unstack", "where"],
)
def test_constant_zeros_and_piecewise_constants_depend_on_nothing(f):
    x = jnp.array([0.7, 1.3, 2.1, 0.4])
    with warnings.catch_warnings():
        warnings.simplefilter("error", modes.SparsityWarning)
        P = dense_pattern(modes.sparsity(f, x))
    true = np.zeros_like(P)
    for seed in range(3):
        # away from (0, 1), where floor(x) * x has a zero derivative by value, not structure
        point = jax.random.uniform(jax.random.key(seed), (4,), minval=1.2, maxval=3.0)
        true |= _flat_jacobian(jax.jacfwd, f, point) != 0
    np.testing.assert_array_equal(P, true)


@jax.custom_jvp
def _permute(x):
    return x[jnp.array([2, 0, 1])]


# The rule applies the function itself to the tangent: permute is its own linear map.
_permute.defjvp(lambda p, t: (_permute(p[0]), _permute(t[0])))


def test_a_rule_that_calls_its_own_function_reads_it_as_the_linear_map():
    x = jnp.array([0.5, 1.5, 2.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error", modes.SparsityWarning)
        P = dense_pattern(modes.sparsity(_permute, x))
    np.testing.assert_array_equal(P, np.eye(3, dtype=bool)[[2, 0, 1]])
    np.testing.assert_allclose(
        modes.jacobian(_permute, x, mode="sparse"), jax.jit(jax.jacfwd(_permute))(x)
    )


# --- Class 4, looser than a peer: starts computed from traced indices ----------------------
# argmax(x[:2]) lies in [0, 1] whatever x is (and has derivative zero); the interpreter carries
# that interval through index arithmetic and JAX's negative-index normalisation (its `i < 0`
# is decided), so the slice reads a band of the starts the index can take, not every start.
def _argmax_start(x):
    return jax.lax.dynamic_slice(x, (jnp.argmax(x[:2]) + 1,), (3,))


def _argmax_update(x):
    # Starts 2..3 of a 4-wide update: positions 3, 4 and 5 are overwritten at every start.
    return jax.lax.dynamic_update_slice(x, jnp.sin(x[:4]), (jnp.argmax(x[:2]) + 2,))


def _decided_where(x):
    i = jnp.argmax(x[:3])  # in [0, 2]: `i > 5` is always False
    return jax.lax.dynamic_slice(x, (jnp.where(i > 5, 0, 4),), (2,))


def _clamped_square(x):
    return x[jnp.clip(jnp.argmax(x[:3]) ** 2, 1, 3)] * x[6:]


def _clamp_above_its_max(x):
    # clamp(5, i, h) with h = argmax(x[3:6]) <= 2 < 5: the result is h, in [0, 2], not
    # [2, 5] (an interval built from x and the lower limit alone missed the starts 0 and 1).
    i = jnp.argmax(x[:3]).astype(jnp.int32)
    h = jnp.argmax(x[3:6]).astype(jnp.int32)
    return jax.lax.dynamic_slice(x, (jax.lax.clamp(jnp.int32(5), i, h),), (2,))


def _integer_as_bool(x):
    # argmax + 5 is in [5, 7]: as a bool it is always True (1), not "in [5, 7]", so the
    # comparison with True must not be decided False.
    b = (jnp.argmax(x[:3]) + 5).astype(bool)
    return jnp.where(b == True, x[6], x[7]) * jnp.ones(2)  # noqa: E712


def _gather_with_fill(x):
    # Index 3 or 4 into 4 entries in "fill" mode: 3, or the fill value -5 out of bounds; the
    # start k + 5 is then 8 (clamped to 6) or 0, and the gather's interval must hold -5.
    k = jnp.arange(4).at[jnp.argmax(x[:2]) + 3].get(mode="fill", fill_value=-5)
    return jax.lax.dynamic_slice(x, (k + 5,), (2,))


@pytest.mark.parametrize(
    "f, want",
    [
        (_argmax_start, [(r, c) for r in range(3) for c in (r + 1, r + 2)]),
        (_argmax_update, None),
        (_decided_where, [(0, 4), (1, 5)]),
        # clip(argmax ** 2, 1, 3) is 1 or 3: the interval [1, 3] also admits 2 (looser, sound)
        (_clamped_square, [(r, c) for r in range(2) for c in (1, 2, 3, 6 + r)]),
        (_clamp_above_its_max, None),
        (_integer_as_bool, None),
        # the interval [-5, 3] admits every start 0..6 (looser than {0, 6}, and sound)
        (_gather_with_fill, [(r, r + o) for r in range(2) for o in range(7)]),
    ],
)
def test_traced_starts_read_only_what_their_bounds_allow(f, want):
    x = jnp.arange(8.0)
    pattern = dense_pattern(modes.sparsity(f, x))
    truth = np.zeros_like(pattern)
    jac = jax.jit(jax.jacfwd(f))  # compiled once for the 300 points, not run op by op
    for k in range(300):
        point = jax.random.normal(jax.random.key(k), x.shape)
        truth |= np.asarray(jac(point)) != 0
    assert not (truth & ~pattern).any(), "missed a nonzero"
    if want is not None:
        expected = np.zeros_like(pattern)
        expected[tuple(np.array(want).T)] = True
        assert (pattern == expected).all(), np.argwhere(pattern != expected).tolist()
    else:  # exact: the union of the true patterns over many points
        assert (pattern == truth).all(), np.argwhere(pattern != truth).tolist()
