"""No silent wrong results: bad input is either handled the same way everywhere or refused.

Each test here failed on the library before it was written (out-of-range labels under jit,
a gradient check of zero directions, float16 cross-entropy, empty axes, unchecked configs).
"""

from __future__ import annotations

import dataclasses
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import sample_op_args
from hypothesis import given, settings
from hypothesis import strategies as st

from bpjax import check, data, fwd, manual, models, ref, rev, rules, tape, train

NAMESPACES = {"ref": ref, "rev": rev, "fwd": fwd}

# --- out-of-range labels under jit --------------------------------------------------------


@pytest.fixture(scope="module")
def logits():
    return jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)))


@pytest.mark.parametrize("bad", [-1, 4, 10])
def test_out_of_range_labels_under_jit_give_nan_rows_in_every_namespace(logits, bad):
    labels = jnp.array([bad, 0, 3])
    losses, grads = {}, {}
    for name, ns in NAMESPACES.items():
        losses[name], grads[name] = jax.jit(jax.value_and_grad(ns.softmax_cross_entropy))(
            logits, labels
        )
    valid_rows = jax.grad(ref.softmax_cross_entropy)(logits[1:], labels[1:]) * 2 / 3
    for name in NAMESPACES:
        assert jnp.isnan(losses[name]), name  # negative ids do not wrap around to a class
        assert bool(jnp.all(jnp.isnan(grads[name][0]))), (name, grads[name][0])
        np.testing.assert_allclose(grads[name][1:], valid_rows, rtol=1e-12, err_msg=name)


def test_out_of_range_labels_under_jit_in_cross_entropy_and_manual(logits):
    probs = jax.nn.softmax(logits)
    labels = jnp.array([7, 0, 3])
    got = {
        name: jax.jit(jax.grad(ns.cross_entropy))(probs, labels) for name, ns in NAMESPACES.items()
    }
    for g in got.values():
        np.testing.assert_array_equal(np.isnan(g), np.isnan(got["ref"]))
        assert bool(jnp.all(jnp.isnan(g[0]))) and not bool(jnp.any(jnp.isnan(g[1:])))
    params = models.init_layers(jax.random.key(0), (4, 5, 4))
    loss, (g1, _) = jax.jit(manual.backprop)(params, logits, labels)
    auto = jax.jit(jax.grad(lambda p, x, y: models.layers_loss(p, x, y, ops=ref)))(
        params, logits, labels
    )
    assert jnp.isnan(loss)
    np.testing.assert_array_equal(np.isnan(g1[0]), np.isnan(auto[0][0]))


@pytest.mark.parametrize("name", sorted(NAMESPACES))
def test_check_labels_raises_under_jit(logits, name):
    ns = NAMESPACES[name]
    f = jax.jit(lambda z, y: ns.softmax_cross_entropy(z, y, check_labels=True))
    assert jnp.isfinite(f(logits, jnp.array([0, 1, 3])))
    with pytest.raises(Exception, match=r"labels must lie in \[0, 4\).*rows \[1\]"):
        jax.block_until_ready(f(logits, jnp.array([0, 4, 3])))
    g = jax.jit(jax.grad(lambda p, y: ns.cross_entropy(p, y, check_labels=True)))
    with pytest.raises(Exception, match=r"cross_entropy: integer labels must lie"):
        jax.block_until_ready(g(jax.nn.softmax(logits), jnp.array([-2, 0, 0])))


def test_concrete_out_of_range_labels_are_refused_alike_by_the_tape_and_manual(logits):
    labels = jnp.array([0, 9, 1])
    for call in (
        lambda: rev.softmax_cross_entropy(logits, labels),
        lambda: tape.softmax_cross_entropy(tape.Var(logits, requires_grad=True), labels),
        lambda: manual.backprop(models.init_layers(jax.random.key(0), (4, 4)), logits, labels),
    ):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*rows \[1\]"):
            call()


def test_train_refuses_bad_labels_before_the_first_step():
    ds = data.digits()
    y = np.asarray(ds.y_train).copy()
    y[[5, 17]] = [10, -1]
    bad = ds._replace(y_train=jnp.asarray(y))
    with pytest.raises(ValueError, match=r"y_train.*lie in \[0, 10\).*rows \[5, 17\]"):
        train.train(models.MLP(depth=2, width=8), bad, steps=1, eval_every=1)


# --- checks that cannot pass vacuously ----------------------------------------------------


def _wrong_tanh():
    @jax.custom_vjp
    def f(z):
        return jnp.tanh(z)

    f.defvjp(lambda z: (jnp.tanh(z), jnp.tanh(z)), lambda a, g: (g * (1 - a),))
    return f


@pytest.mark.parametrize("directions", [0, -1, 1.5, True])
def test_gradient_check_refuses_zero_or_odd_directions(directions):
    with pytest.raises(ValueError, match="directions must be an int >= 1"):
        check.gradients(_wrong_tanh(), jnp.ones(3), reference=jnp.tanh, directions=directions)


def test_gradient_check_refuses_a_reference_of_another_shape():
    with pytest.raises(ValueError, match=r"reference returns .*\(1, 3\).* f returns .*\(3,\)"):
        check.gradients(_wrong_tanh(), jnp.ones(3), reference=lambda z: jnp.tanh(z)[None])
    with pytest.raises(ValueError, match="eps must be a positive number"):
        check.gradients(jnp.tanh, jnp.ones(3), eps=0.0)


# --- low-precision cross-entropy ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(NAMESPACES))
def test_cross_entropy_in_half_precision_stays_finite_at_p_0_and_1(dtype, name):
    ns = NAMESPACES[name]
    probs = jnp.array([[0.0, 1.0], [1.0, 0.0]], dtype)
    wrong = jnp.array([0, 1])  # the label's probability is 0: the clip must keep log finite
    loss = ns.cross_entropy(probs, wrong)
    eps = max(1e-15, float(jnp.finfo(dtype).tiny))
    assert loss.dtype == dtype and bool(jnp.isfinite(loss))
    np.testing.assert_allclose(float(loss), -np.log(eps), rtol=1e-2)
    right = jnp.array([1, 0])  # probability 1: loss 0, slope −1/(m p) = −1/2
    assert float(ns.cross_entropy(probs, right)) == 0.0
    g = jax.grad(ns.cross_entropy)(probs, right)
    np.testing.assert_array_equal(np.asarray(g, np.float32), [[0.0, -0.5], [-0.5, 0.0]])
    g_wrong = jax.grad(ns.cross_entropy)(probs, wrong)
    assert bool(jnp.all(jnp.isfinite(g_wrong)))


def test_cross_entropy_refuses_an_eps_that_rounds_to_zero():
    with pytest.raises(ValueError, match=r"eps=1e-15 rounds to 0 in float16"):
        rev.cross_entropy(jnp.ones((1, 2), jnp.float16) / 2, jnp.array([0]), eps=1e-15)


# --- empty axes, bad axes, empty batches --------------------------------------------------


@pytest.mark.parametrize("name", sorted(NAMESPACES))
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_over_an_empty_axis_is_empty(name, op):
    fn = getattr(NAMESPACES[name], op)
    for shape, axis in (((5, 0, 0), -1), ((3, 0), 1), ((0, 4), 0)):
        out = fn(jnp.ones(shape), axis=axis)
        assert out.shape == shape
        g = jax.grad(lambda z, fn=fn, axis=axis: jnp.sum(fn(z, axis=axis)))(jnp.ones(shape))
        assert g.shape == shape
    np.testing.assert_allclose(fn(jnp.ones((0, 3)), axis=-1), np.ones((0, 3)))


@pytest.mark.parametrize("axis", ["x", (0, 1), 0.5, True, None])
def test_softmax_names_a_bad_axis(axis):
    for ns in NAMESPACES.values():
        with pytest.raises(TypeError, match=r"softmax: axis must be one int .*, got"):
            ns.softmax(jnp.ones((2, 3)), axis=axis)


@pytest.mark.parametrize(
    ("op", "args", "message"),
    [
        ("softmax_cross_entropy", (np.ones((0, 3)), np.zeros(0, int)), "logits has no rows"),
        ("softmax_cross_entropy", (np.ones((2, 0)), np.zeros(2, int)), "logits has no classes"),
        ("cross_entropy", (np.ones((0, 3)), np.ones((0, 3)) / 3), "probs has no rows"),
        ("mse", (np.ones((0, 2)), np.ones((0, 2))), "mse: pred is empty"),
    ],
)
def test_losses_refuse_empty_batches_instead_of_returning_nan(op, args, message):
    for ns in NAMESPACES.values():
        with pytest.raises(ValueError, match=message):
            getattr(ns, op)(*args)


# --- manual and the tape validate like the table ------------------------------------------


def test_manual_validates_weights_and_labels_like_the_table():
    params = [(jnp.ones((4, 8)), jnp.zeros(8)), (jnp.ones((8, 3)), jnp.zeros(3))]
    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match=r"manual: softmax_cross_entropy: integer labels must"):
        manual.backprop(params, x, jnp.array([0, 1, 2]))
    ints = [(jnp.ones((4, 8), int), jnp.zeros(8, int)), params[1]]
    with pytest.raises(TypeError, match=r"manual: layer 0: linear: W must have a floating dtype"):
        manual.backprop(ints, x, jnp.array([0, 1]))
    nested = [(np.ones((4, 8)).tolist(), [0.0] * 8), (np.ones((8, 3)).tolist(), [0.0] * 3)]
    loss, grads = manual.backprop(nested, x, jnp.array([0, 1]))
    want_loss, want = manual.backprop(params, x, jnp.array([0, 1]))
    np.testing.assert_allclose(loss, want_loss)
    np.testing.assert_allclose(grads[0][0], want[0][0])


def test_tape_validates_like_the_table_and_refuses_implicit_non_scalar_seeds():
    W = tape.Var(jnp.ones((3, 4)), requires_grad=True)
    with pytest.raises(ValueError, match=r"linear: x has 5 features but W expects 3"):
        tape.linear(jnp.ones((2, 5)), W, jnp.zeros(4))
    with pytest.raises(TypeError, match=r"tanh: z must have a floating dtype"):
        tape.tanh(jnp.arange(3))
    with pytest.raises(ValueError, match=r"integer labels must have shape \(2,\)"):
        tape.softmax_cross_entropy(tape.matmul(jnp.ones((2, 3)), W), jnp.array([0, 1, 2]))
    out = tape.tanh(tape.matmul(jnp.ones((2, 3)), W))
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar"):
        out.backward()
    out.backward(seed=jnp.ones((2, 4)))  # an explicit seed is fine
    assert W.grad.shape == (3, 4)


# --- model configs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("depth", True),
        ("depth", 0),
        ("width", 2.0),
        ("gain", float("nan")),
        ("gain", -1.0),
        ("dense_cap", 2.5),
        ("branch_scale", float("inf")),
        ("gate_bias", float("nan")),
        ("dtype", jnp.int32),
    ],
)
def test_mlp_refuses_bad_config(field, value):
    with pytest.raises((ValueError, TypeError), match=f"MLP: {field}"):
        models.MLP(**{field: value})


def test_mlp_checks_init_sizes_and_params_against_its_config():
    model = models.MLP(width=8, depth=3)
    with pytest.raises(ValueError, match="MLP.init: d_in must be an integer >= 1, got 0"):
        model.init(jax.random.key(0), 0, 3)
    params = model.init(jax.random.key(0), 4, 3)
    for other in (
        dataclasses.replace(model, width=16),
        dataclasses.replace(model, depth=5),
        dataclasses.replace(model, arch="highway"),
        dataclasses.replace(model, arch="dense"),
    ):
        with pytest.raises(ValueError, match="made by another config"):
            other.apply(params, jnp.ones((2, 4)))


# --- data ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [-0.2, 0.0, 1.0, 1.5])
def test_digits_refuses_a_test_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=r"test_fraction must lie in \(0, 1\)"):
        data.digits(test_fraction=fraction)


def test_digits_without_scikit_learn_says_it_substituted_synthetic_data(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import now raises
    with pytest.warns(UserWarning, match="SYNTHETIC stand-in"):
        ds = data.digits()
    assert ds.name == "synthetic"
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.digits(synthetic_fallback=False)


# --- the whole table under random invalid input -------------------------------------------

KINDS = ("valid", "rank", "dims", "dtype", "empty", "labels", "option")
BAD_OPTIONS = {
    "axis": [3, -4, "x", None, 0.5, (0, 1), True],
    "eps": [0.0, -1.0, "a", True, float("nan")],
    "check_labels": [1, "yes", None],
}


def _corrupt(name, kind, seed):
    """A valid call of op ``name`` (from the shared sampler) with one thing broken."""
    rng = np.random.default_rng(seed)
    soft = bool(rng.integers(2))
    args, options = sample_op_args(name, seed, *rng.integers(1, 5, size=3), soft=soft)
    args, options = [np.asarray(a) for a in args], dict(options)
    rule = rules.TABLE[name]
    i = int(rng.integers(len(args)))
    if kind == "rank":
        args[i] = args[i][None] if rng.integers(2) or args[i].ndim == 0 else args[i].ravel()[0]
    elif kind == "dims" and args[i].ndim:
        axis = int(rng.integers(args[i].ndim))
        args[i] = np.concatenate([args[i], np.take(args[i], [0], axis=axis)], axis=axis)
    elif kind == "dtype":
        dtype = [np.int32, np.bool_, np.complex64, np.uint8][int(rng.integers(4))]
        args[i] = args[i].astype(dtype)
    elif kind == "empty" and args[i].ndim:
        args[i] = np.take(args[i], [], axis=int(rng.integers(args[i].ndim)))
    elif kind == "labels" and "labels" in rule.array_params:
        j = rule.array_params.index("labels")
        rows = args[0].shape[:-1]
        args[j] = rng.integers(-3, args[0].shape[-1] + 3, size=rows)
    elif kind in ("option", "labels", "dims", "empty"):
        if rule.option_params:
            option = rule.option_params[int(rng.integers(len(rule.option_params)))]
            choices = BAD_OPTIONS[option]
            options[option] = choices[int(rng.integers(len(choices)))]
        else:
            options["axes"] = 0  # an unknown keyword
    return args, options


def _outcomes(name, args, options, *, traced):
    out = {}
    for ns_name, ns in NAMESPACES.items():
        fn = getattr(ns, name)

        def call(*a, fn=fn):
            return fn(*a, **options)

        try:
            out[ns_name] = ("value", np.asarray((jax.jit(call) if traced else call)(*args)))
        except (ValueError, TypeError) as err:
            out[ns_name] = ("error", type(err).__name__, str(err))
    return out


def _same_gradients(name, args, options):
    floats = [k for k, a in enumerate(args) if np.issubdtype(a.dtype, np.floating)]
    grads = {}
    for ns_name, ns in NAMESPACES.items():
        fn = getattr(ns, name)

        def scalar(*fl, fn=fn):
            full = list(args)
            for k, value in zip(floats, fl, strict=True):
                full[k] = value
            return jnp.sum(jnp.sin(fn(*full, **options)))

        argnums = tuple(range(len(floats)))
        grads[ns_name] = jax.jit(jax.grad(scalar, argnums))(*[args[k] for k in floats])
    tol = 1e-4 if any(args[k].dtype == np.float32 for k in floats) else 1e-9
    for ns_name in ("rev", "fwd"):
        for g, w in zip(grads[ns_name], grads["ref"], strict=True):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=f"{ns_name}.{name}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(rules.TABLE))
@settings(max_examples=max(1, settings.default.max_examples // 4))  # 15 under bpjax-slow
@given(seed=st.integers(0, 2**16))
def test_every_op_either_agrees_with_ref_or_refuses_naming_the_argument(name, kind, seed):
    args, options = _corrupt(name, kind, seed)
    rule = rules.TABLE[name]
    names = rule.array_params + rule.option_params + tuple(k for k in options if k == "axes")
    for traced in (False, True):
        out = _outcomes(name, args, options, traced=traced)
        kinds = {o[0] for o in out.values()}
        assert len(kinds) == 1, (traced, out)  # all three raise, or all three return
        if kinds == {"error"}:
            assert len({o[1:] for o in out.values()}) == 1, out  # the same error everywhere
            _, _, message = out["ref"]
            assert message.startswith(name), message
            assert any(re.search(rf"\b{re.escape(a)}\b", message) for a in names), message
            continue
        for ns_name in ("rev", "fwd"):
            np.testing.assert_array_equal(out[ns_name][1], out["ref"][1], err_msg=ns_name)
        if traced:
            _same_gradients(name, args, options)
