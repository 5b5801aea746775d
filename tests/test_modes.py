"""Forward vs reverse mode: Jacobians on pytrees, the automatic choice, gradients, HVPs, and
the errors of the public entry points."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpjax import fwd, measure, modes, rev
from bpjax.modes import _coloring, _cost, _plan, examples


def _mlp(n, m, h=64, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    W1 = jax.random.normal(k1, (h, n)) / np.sqrt(n)
    W2 = jax.random.normal(k2, (m, h)) / np.sqrt(h)
    return lambda x: W2 @ jnp.tanh(W1 @ x)


def _pytree_f(p):
    a, b = p["a"], p["b"]
    return {"s": jnp.sum(a * jnp.sin(b[0])), "v": (jnp.tanh(a) * b[1] ** 2, jnp.exp(a[:2]))}


@pytest.mark.parametrize("mode", ["fwd", "rev", "sparse", "auto"])
def test_jacobian_equals_jacrev_on_pytrees(mode):
    p = {"a": jnp.linspace(-1.0, 1.0, 3), "b": jnp.array([[0.3, -0.2, 0.5], [1.0, 2.0, 3.0]])}
    got = modes.jacobian(_pytree_f, p, mode=mode)
    want = jax.jit(jax.jacrev(_pytree_f))(p)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-14)


def test_auto_picks_forward_for_tall_and_reverse_for_wide():
    tall = modes.choose_mode(_mlp(4, 2048), jnp.ones(4))
    wide = modes.choose_mode(_mlp(2048, 4), jnp.ones(2048))
    assert tall.mode == "fwd" and wide.mode == "rev"
    assert tall.fwd["seconds"] < tall.rev["seconds"] and wide.rev["seconds"] < wide.fwd["seconds"]
    assert "cheaper" in tall.reason and tall.n == 4 and tall.m == 2048
    assert tall.basis == "model" and tall.decision_seconds > 0
    xla = modes.choose_mode(_mlp(4, 2048), jnp.ones(4), basis="xla")
    assert xla.mode == "fwd" and xla.fwd["flops"] < xla.rev["flops"]


@pytest.mark.parametrize(("n", "m"), [(4, 512), (512, 4), (64, 64), (1, 256), (200, 30)])
def test_predicted_flop_ratio_matches_compiled_jacobians(n, m):
    f, x = _mlp(n, m), jnp.ones(n)
    choice = modes.choose_mode(f, x, basis="xla")
    fl_fwd = measure.flops(lambda x: modes.jacobian(f, x, mode="fwd"), x)
    fl_rev = measure.flops(lambda x: modes.jacobian(f, x, mode="rev"), x)
    predicted = choice.fwd["flops"] / choice.rev["flops"]
    assert abs(predicted / (fl_fwd / fl_rev) - 1) <= 0.10


def test_hand_written_forward_rules_work_and_reverse_only_rules_force_reverse():
    W = jax.random.normal(jax.random.key(0), (5, 3))

    def f_fwd(x):
        return fwd.tanh(fwd.matmul(x[None, :], W))[0]

    def f_rev(x):
        return rev.tanh(rev.matmul(x[None, :], W))[0]

    x = jnp.linspace(-1.0, 1.0, 5)
    want = jax.jit(jax.jacrev(f_fwd))(x)
    np.testing.assert_allclose(modes.jacobian(f_fwd, x, mode="fwd"), want, rtol=1e-12)
    choice = modes.choose_mode(f_rev, x)
    assert choice.mode == "rev" and choice.fwd is None and "custom_vjp" in choice.reason
    np.testing.assert_allclose(modes.jacobian(f_rev, x), want, rtol=1e-12)


def test_gradient_by_forward_mode_equals_grad():
    def loss(p):
        return jnp.sum(jnp.tanh(p["w"] @ p["x"]) ** 2) + jnp.sum(p["x"] ** 3)

    p = {"w": jnp.arange(6.0).reshape(2, 3) / 7, "x": jnp.array([0.1, -0.4, 0.9])}
    got = modes.grad_fwd(loss)(p)
    want = jax.grad(loss)(p)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    with pytest.raises(TypeError, match="must return a scalar"):
        modes.grad_fwd(lambda x: x * 2)(jnp.ones(3))


def test_three_hvp_orders_and_the_hessian_agree():
    def loss(p):
        return jnp.sum(jnp.sin(p["a"])) * jnp.sum(jnp.cosh(p["b"] @ p["a"]))

    p = {"a": jnp.array([0.3, -0.7, 1.1]), "b": jnp.arange(6.0).reshape(2, 3) / 10}
    v = {"a": jnp.array([1.0, 0.5, -2.0]), "b": jnp.ones((2, 3)) / 3}
    results, H = jax.jit(
        lambda p, v: (
            ({o: modes.hvp(loss, p, v, order=o) for o in modes.HVP_ORDERS},)
            + (modes.hessian(loss, p),)
        )
    )(p, v)
    # H[i][j] has shape i.shape + j.shape: contract over j's axes.
    dense = {i: sum(jnp.tensordot(H[i][j], v[j], axes=v[j].ndim) for j in p) for i in p}
    for out in results.values():
        for k in p:
            np.testing.assert_allclose(out[k], dense[k], rtol=1e-11, atol=1e-13)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(TypeError, match=r"x\['name'\] is a str, not an array"):
        modes.jacobian(lambda p: p["v"], {"v": jnp.ones(2), "name": "w"})
    with pytest.raises(TypeError, match=r"integer inputs are not differentiable"):
        modes.jacobian(lambda x: x * 2.0, jnp.arange(3))
    with pytest.raises(TypeError, match=r"complex inputs are not supported"):
        modes.jacobian(jnp.sin, jnp.ones(3, jnp.complex64))
    with pytest.raises(TypeError, match=r"f must return floating arrays.*int"):
        modes.jacobian(lambda x: jnp.argmax(x), jnp.ones(3))
    with pytest.raises(TypeError, match=r"f could not be traced.*not a valid JAX type"):
        modes.jacobian(lambda x: "done", jnp.ones(3))
    with pytest.raises(ValueError, match=r"unknown mode 'both'"):
        modes.jacobian(jnp.sin, jnp.ones(3), mode="both")
    with pytest.raises(ValueError, match=r"unknown coloring 'stars'"):
        modes.jacobian(jnp.sin, jnp.ones(3), mode="sparse", coloring="stars")
    with pytest.raises(ValueError, match=r"coloring='rows' needs mode='sparse'"):
        modes.jacobian(jnp.sin, jnp.ones(3), mode="fwd", coloring="rows")
    with pytest.raises(ValueError, match=r"sparse_output=True needs x and f\(x\) to be single"):
        modes.jacobian(_pytree_f, {"a": jnp.ones(3), "b": jnp.ones((2, 3))}, sparse_output=True)
    with pytest.raises(ValueError, match=r"unknown order"):
        modes.hvp(jnp.sum, jnp.ones(3), jnp.ones(3), order="fwd-over-fwd")
    with pytest.raises(ValueError, match=r"unknown basis"):
        modes.choose_mode(jnp.sin, jnp.ones(3), basis="guess")


def _rev_loss(x):
    return jnp.sum(rev.tanh(x[None, :]) ** 2)


def test_custom_vjp_and_forward_mode_errors_name_the_fix():
    # Before: JAX's raw "can't apply forward-mode autodiff (jvp) to a custom_vjp function".
    x = jnp.linspace(-1.0, 1.0, 3)
    with pytest.raises(TypeError, match=r"f has a custom_vjp.*mode='rev'.*bpjax.fwd"):
        modes.jacobian(rev.tanh, x[None, :], mode="fwd")
    with pytest.raises(TypeError, match=r"grad_fwd: f has a custom_vjp"):
        modes.grad_fwd(_rev_loss)(x)
    # Before: NotImplementedError: Differentiation rule for 'custom_lin' not implemented.
    with pytest.raises(TypeError, match=r"order='rev-over-fwd'.*'fwd-over-rev'.*bpjax.fwd"):
        modes.hvp(_rev_loss, x, jnp.ones(3), order="rev-over-fwd")
    want = jax.hessian(lambda x: jnp.sum(jnp.tanh(x) ** 2))(x) @ jnp.ones(3)
    got = modes.hvp(_rev_loss, x, jnp.ones(3), order="fwd-over-rev")
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("order", modes.HVP_ORDERS)
def test_hvp_tangent_of_the_wrong_shape_or_structure_is_named(order):
    # Before: a jvp shape error or a dot_general error from deep inside.
    with pytest.raises(ValueError, match=r"v has shape \(4,\) but x has shape \(3,\)"):
        modes.hvp(jnp.sum, jnp.ones(3), jnp.ones(4), order=order)
    with pytest.raises(ValueError, match=r"v\['a'\] has shape \(2,\) but x\['a'\] has"):
        modes.hvp(lambda p: jnp.sum(p["a"]), {"a": jnp.ones(3)}, {"a": jnp.ones(2)}, order=order)
    with pytest.raises(ValueError, match=r"v must have the same pytree structure as x"):
        modes.hvp(lambda p: jnp.sum(p["a"]), {"a": jnp.ones(3)}, {"b": jnp.ones(3)}, order=order)


def test_calibration_times_both_directions_even_when_the_model_ranks_one_far_behind():
    # Six transcendental steps on x, a gather of m entries, six more: the run-time model
    # priced forward mode 6-7x above reverse mode here (1.5x since it counts only the
    # gathered elements in forward mode), while the compiled forward mode ran 5x faster;
    # calibration must time both directions and pick by the timings, however far apart the
    # model puts them.
    f = examples.gather_chain(jnp.arange(256) % 2048)  # mode_cost's point n=2048, m=256
    x = jnp.linspace(-1.0, 1.0, 2048)
    timed = modes.choose_mode(f, x, basis="timing", colorings=False)
    assert {"fwd", "rev"} <= set(timed.candidates)
    fastest = min(timed.candidates, key=lambda name: timed.candidates[name]["seconds"])
    assert timed.method == fastest or (
        timed.candidates[timed.method]["seconds"] <= 1.02 * timed.candidates[fastest]["seconds"]
    )


def test_forward_work_counts_only_the_elements_a_gather_reads():
    # XLA fuses the elementwise steps into the gather that consumes them: a JVP evaluates
    # them only at the m gathered entries, a VJP (whose scatter-add fills all n) at all n.
    n = 2048
    work = {}
    for m in (1, 256, n):
        f = examples.gather_chain((jnp.arange(m) * 7) % n)
        work[m] = _cost.profile(jax.make_jaxpr(f)(jnp.ones(n)))
    before, after = 6 * 5, 6 * 6  # equations per element before and after the gather
    for m, w in work.items():
        assert w.elements == before * n + after * m, m
        assert w.pulled == (before + after) * m, m  # == elements for the permutation m = n


def _identity_plus_permutation(n=256):
    """``J = I + P``: two nonzeros per row and column; the permutation's odd cycles need a
    third color, one-sided, against a bicoloring bound of 2."""
    perm = jnp.asarray(np.random.default_rng(0).permutation(n))
    return lambda x: x**2 + jnp.sin(x[perm]), jnp.ones(n)


@pytest.mark.parametrize(("name", "mode", "calls"), [
    ("permutation", "auto", 0),  # 3 colors one-sided vs a bicoloring bound of 2: not worth it
    ("permutation", "sparse", 1),  # asked for sparse: every coloring is tried
    ("stencil", "sparse", 0),  # a one-sided coloring at its bound (5) needs no bicoloring
    ("arrowhead", "auto", 1),  # one-sided colorings need n
])  # fmt: skip
def test_auto_tries_the_bicoloring_only_where_it_can_save_a_third(monkeypatch, name, mode, calls):
    seen = []
    bicolor = _coloring.bicolor
    monkeypatch.setattr(_coloring, "bicolor", lambda p: seen.append(1) or bicolor(p))
    if name == "permutation":
        f, x = _identity_plus_permutation()
    else:
        f, x, _ = examples.family(name, 256)
    _plan.plan(f, x, mode=mode)
    assert len(seen) == calls
