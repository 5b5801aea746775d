"""The rule table: every op, three namespaces, against JAX autodiff and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import matmul_shapes, sample_op_args
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from bpjax import check, fwd, ref, rev, rules

OPS = sorted(rules.TABLE)
NAMESPACES = {"ref": ref, "rev": rev, "fwd": fwd}

shapes = st.tuples(
    st.integers(0, 2**31 - 1),  # seed
    st.integers(1, 5),  # batch
    st.integers(1, 6),  # d_in
    st.integers(1, 6),  # d_out
    st.booleans(),  # soft labels
)


def _float_part(name, args, options, namespace):
    """The op as a function of its floating arguments only (class ids held fixed)."""
    fn = getattr(namespace, name)
    is_float = [np.issubdtype(np.asarray(a).dtype, np.floating) for a in args]
    floats = tuple(jnp.asarray(a) for a, f in zip(args, is_float, strict=True) if f)

    def f(*xs):
        it = iter(xs)
        full = [next(it) if fl else a for a, fl in zip(args, is_float, strict=True)]
        return fn(*full, **options)

    return f, floats


def test_namespaces_expose_the_whole_table_with_one_signature():
    for name, rule in rules.TABLE.items():
        for ns in NAMESPACES.values():
            fn = getattr(ns, name)
            assert fn.rule is rule
            assert fn.__module__ == ns.__name__
            import inspect

            assert inspect.signature(fn) == rule.signature
        assert "custom_vjp" in rev.__dict__[name].__doc__
        assert "custom_jvp" in fwd.__dict__[name].__doc__
    assert sorted(ref.__all__) == sorted(rev.__all__) == sorted(fwd.__all__) == OPS


@pytest.mark.parametrize("name", OPS)
@settings(max_examples=max(2, settings.default.max_examples // 2))  # 30 under bpjax-slow
@given(case=shapes)
def test_primal_agrees_across_namespaces(name, case):
    args, options = sample_op_args(name, *case[:4], soft=case[4])
    outs = [np.asarray(getattr(ns, name)(*args, **options)) for ns in NAMESPACES.values()]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


@pytest.mark.parametrize("name", OPS)
@given(case=shapes)
@example(case=(1, 5, 3, 2, True))  # non-square, soft unnormalised labels, on every run
def test_hand_rules_match_autodiff_jacobians(name, case):
    """Full Jacobians: rev by reverse mode, fwd by forward mode, both vs autodiff of ref."""
    args, options = sample_op_args(name, *case[:4], soft=case[4])
    f_ref, xs = _float_part(name, args, options, ref)
    f_rev, _ = _float_part(name, args, options, rev)
    f_fwd, _ = _float_part(name, args, options, fwd)
    argnums = tuple(range(len(xs)))

    @jax.jit  # all four Jacobians in one compilation (one per shape, not per primitive)
    def jacobians(*xs):
        return (
            jax.jacrev(f_ref, argnums=argnums)(*xs),
            jax.jacrev(f_rev, argnums=argnums)(*xs),
            jax.jacfwd(f_fwd, argnums=argnums)(*xs),
            jax.jacrev(f_fwd, argnums=argnums)(*xs),  # via the transposed JVP
        )

    # Compared in NumPy (float64, the same arithmetic): jnp here would compile each
    # subtraction and reduction afresh for every Jacobian shape hypothesis draws.
    want, got_rev, got_fwd, got_fwd_t = jax.tree.map(np.asarray, jacobians(*xs))
    for w, r, f, ft in zip(want, got_rev, got_fwd, got_fwd_t, strict=True):
        scale = max(float(np.max(np.abs(w))), 1e-300)
        for got in (r, f, ft):
            assert float(np.max(np.abs(got - w))) / scale <= 1e-10


@pytest.mark.parametrize("name", OPS)
# Shapes are swept by the Jacobian test; this checks the report, on the one case below.
@settings(phases=[Phase.explicit])
@given(case=shapes)
@example(case=(2, 3, 4, 2, True))  # non-square, soft unnormalised labels
def test_gradient_check_report_within_tolerance(name, case):
    args, options = sample_op_args(name, *case[:4], soft=case[4])
    reports = check.op(name, *args, **options)
    for report in reports.values():
        assert report.max_error(exclude_fd=True) <= 1e-10, str(report)
        assert report.errors["vjp vs finite differences"] <= 1e-6, str(report)
    assert "jvp" in reports["rev"].skipped
    assert reports["fwd"].errors["jvp vs autodiff"] <= 1e-10


@pytest.mark.parametrize("name", OPS)
def test_check_grads_second_order(name):
    args, options = sample_op_args(name, 7, 3, 4, 3, soft=True)
    f_rev, xs = _float_part(name, args, options, rev)
    f_fwd, _ = _float_part(name, args, options, fwd)
    # jit: each transform check_grads applies compiles once instead of dispatching op by op.
    # fwd's reverse mode (its transposed JVP) is checked against autodiff to 1e-10, first
    # and second order, by the Jacobian and Hessian tests here; finite differences check
    # each namespace's own direction.
    check_grads(jax.jit(f_rev), xs, order=2, modes=["rev"])
    check_grads(jax.jit(f_fwd), xs, order=2, modes=["fwd"])


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("ns", ["rev", "fwd"])
def test_transforms_jit_vmap_grad_of_grad(name, ns):
    args, options = sample_op_args(name, 3, 4, 3, 2, soft=True)
    f, xs = _float_part(name, args, options, NAMESPACES[ns])
    g, _ = _float_part(name, args, options, ref)
    np.testing.assert_allclose(jax.jit(f)(*xs), g(*xs), rtol=1e-12)

    def scalar(h):
        return lambda *a: jnp.sum(jnp.sin(h(*a)))

    @jax.jit  # vmap and Hessian of the op under test and of the reference, one compilation
    def transforms(*xs):
        # vmap over an extra leading copy axis of every floating argument.
        stacked = [jnp.stack([x, 2 * x]) for x in xs]
        # Hessian of sum(sin(op)) w.r.t. the first argument: the rules' second derivatives.
        return [(jax.vmap(scalar(h))(*stacked), jax.hessian(scalar(h))(*xs)) for h in (f, g)]

    (v_got, h_got), (v_want, h_want) = transforms(*xs)
    np.testing.assert_allclose(v_got, v_want, rtol=1e-12)
    np.testing.assert_allclose(h_got, h_want, rtol=1e-9, atol=1e-12)


def test_rev_has_no_forward_mode_and_says_so():
    x = jnp.ones((2, 3))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(rev.tanh, (x,), (x,))
    _, t = jax.jvp(fwd.tanh, (x,), (x,))
    np.testing.assert_allclose(t, 1 - jnp.tanh(1.0) ** 2)


def test_float32_inputs_stay_float32_through_every_rule():
    x = jnp.ones((2, 3), jnp.float32)
    W = jnp.ones((3, 4), jnp.float32)
    b = jnp.zeros(4, jnp.float32)
    for ns in (rev, fwd):
        grads = jax.grad(lambda x, W, b, ns=ns: jnp.sum(ns.linear(x, W, b)), (0, 1, 2))(x, W, b)
        assert all(g.dtype == jnp.float32 for g in grads)


def test_mixed_float_dtypes_are_promoted_not_rejected():
    x = jnp.ones((2, 3), jnp.float32)
    W = jnp.ones((3, 4), jnp.float64)
    gx, gW = jax.grad(lambda x, W: jnp.sum(rev.linear(x, W, jnp.zeros(4))), (0, 1))(x, W)
    assert gx.dtype == jnp.float32 and gW.dtype == jnp.float64
    np.testing.assert_allclose(gx, 4.0)


@pytest.mark.parametrize("case", range(8))
def test_matmul_has_numpy_semantics_and_its_rules_sum_over_broadcast_axes(case):
    a_shape, b_shape = matmul_shapes(case, 2, 3, 4)
    rng = np.random.default_rng(case)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    want = np.matmul(a, b)
    for ns in NAMESPACES.values():
        np.testing.assert_allclose(ns.matmul(a, b), want, rtol=1e-12)
    j_ref, *j_hand = jax.jit(
        lambda a, b: (
            jax.jacrev(ref.matmul, argnums=(0, 1))(a, b),
            jax.jacrev(rev.matmul, argnums=(0, 1))(a, b),
            jax.jacfwd(fwd.matmul, argnums=(0, 1))(a, b),
            jax.jacrev(fwd.matmul, argnums=(0, 1))(a, b),
        )
    )(a, b)
    for got in j_hand:
        for g, w in zip(got, j_ref, strict=True):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    torch = pytest.importorskip("torch")
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    torch.matmul(ta, tb).sin().sum().backward()
    ga, gb = jax.jit(jax.grad(lambda a, b: jnp.sum(jnp.sin(rev.matmul(a, b))), argnums=(0, 1)))(
        a, b
    )
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-12)


MIXED = {  # op: the float arguments whose cross derivatives a hand rule could get wrong
    "linear": (0, 1, 2),
    "matmul": (0, 1),
    "softmax_cross_entropy": (0, 1),
    "cross_entropy": (0, 1),
    "mse": (0, 1),
}


@pytest.mark.parametrize("name", sorted(MIXED))
def test_mixed_second_derivatives_match_autodiff(name):
    """∂²L/∂z∂y and every other cross block, with soft unnormalised labels.

    A VJP that drops a factor only visible off the diagonal (e.g. Σy in the fused
    softmax-cross-entropy rule, which is 1 for one-hot labels) fails here.
    """
    args, options = sample_op_args(name, 11, 3, 4, 3, soft=True)
    f_ref, xs = _float_part(name, args, options, ref)
    f_rev, _ = _float_part(name, args, options, rev)
    f_fwd, _ = _float_part(name, args, options, fwd)
    argnums = MIXED[name]

    def scalar(f):
        return lambda *a: jnp.sum(jnp.sin(f(*a)))

    want = jax.jit(jax.jacfwd(jax.jacrev(scalar(f_ref), argnums), argnums))(*xs)
    got_rev = jax.jit(jax.jacrev(jax.jacrev(scalar(f_rev), argnums), argnums))(*xs)
    got_fwd = jax.jit(jax.jacfwd(jax.jacrev(scalar(f_fwd), argnums), argnums))(*xs)
    for got in (got_rev, got_fwd):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)
