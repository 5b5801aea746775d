"""Sparse and mixed-mode Jacobians equal jax.jacrev, on every family and on pytrees."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import record_rates

from bpjax import measure, modes
from bpjax.modes import _basis_model, _cost, _rates, _sparse, examples


@pytest.mark.parametrize("name", examples.FAMILIES)
def test_every_method_equals_jacrev_on_every_family(name):
    f, x, _ = examples.family(name, 64, dtype=jnp.float64)
    want = np.asarray(jax.jit(jax.jacrev(f))(x))

    # Every method in one compiled program: each would otherwise run op by op, compiling
    # every primitive afresh (the eager path has tests of its own, on pytrees, below).
    @jax.jit
    def every_method(x):
        got = {}
        for coloring in modes.COLORINGS:
            got[coloring] = modes.jacobian(f, x, mode="sparse", coloring=coloring)
            bcoo = modes.jacobian(f, x, mode="sparse", coloring=coloring, sparse_output=True)
            got[coloring + " BCOO"] = bcoo.todense()
        got["auto"] = modes.jacobian(f, x)
        for mode in ("fwd", "rev"):  # dense modes reading the pattern's nonzeros into a BCOO
            got[mode + " BCOO"] = modes.jacobian(f, x, mode=mode, sparse_output=True).todense()
        return got

    for method, jac in every_method(x).items():
        np.testing.assert_allclose(jac, want, rtol=0, atol=1e-10, err_msg=method)


def _pytree_f(p):
    """Tridiagonal in ``u``, an arrowhead coupling through ``c``, outputs as a dict."""
    u, c = p["u"], p["c"]
    q = jnp.pad(u, 1)
    return {
        "interior": jnp.sin(q[:-2]) * u + jnp.cos(q[2:]) * c[0],
        "total": (jnp.sum(u**2) + c[1] * c[0])[None],
    }


@pytest.mark.parametrize("coloring", [*modes.COLORINGS, None])
def test_sparse_and_mixed_mode_work_on_pytree_inputs_and_outputs(coloring):
    p = {"u": jnp.linspace(-1.0, 1.0, 12), "c": jnp.array([0.7, -0.3])}
    want = jax.jit(jax.jacrev(_pytree_f))(p)
    mode = "sparse" if coloring else "auto"
    got = modes.jacobian(_pytree_f, p, mode=mode, coloring=coloring)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


def test_jacobian_fn_decides_once_and_reports_the_decision():
    f, x, pattern = examples.family("arrowhead", 128, dtype=jnp.float64)
    jac = modes.jacobian_fn(f, x)
    assert jac.method == "bicoloring" and jac.mode == "sparse"
    assert jac.coloring.products == 3 and jac.pattern.nnz == pattern.nnz
    assert jac.decision_seconds > 0 and jac.choice.decision_seconds == jac.decision_seconds
    assert "bicoloring" in jac.choice.reason and "cheaper" in jac.choice.reason
    y = x + 0.25
    np.testing.assert_allclose(jac(y), jax.jit(jax.jacrev(f))(y), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match=r"planned for inputs.*Call jacobian_fn again"):
        jac(jnp.ones(64))
    forced = modes.jacobian_fn(f, x, mode="rev")
    assert forced.method == "rev" and forced.choice is None and forced.pattern is None


def test_jacobian_works_under_jit():
    f, x, _ = examples.family("tridiagonal", 32, dtype=jnp.float64)
    got = jax.jit(lambda x: modes.jacobian(f, x, mode="sparse"))(x)
    np.testing.assert_allclose(got, jax.jit(jax.jacrev(f))(x), rtol=0, atol=1e-12)


def test_the_first_decision_of_a_process_may_be_inside_jit(monkeypatch):
    # The rates are measured on first need; if that need is traced (jacobian inside the
    # user's jit, on a machine with nothing kept), the calibration still runs eagerly. It
    # failed with "Cannot apply JAX transformations to a function lowered and compiled".
    monkeypatch.setattr(_rates, "_MEMORY", {})
    monkeypatch.setenv("BPJAX_CACHE_DIR", "off")
    f, x, _ = examples.family("tridiagonal", 32, dtype=jnp.float64)
    got = jax.jit(lambda x: modes.jacobian(f, x, mode="auto"))(x)
    np.testing.assert_allclose(got, jax.jit(jax.jacrev(f))(x), rtol=0, atol=1e-12)
    _rates._machine_rates.cache_clear()
    got = jax.jit(lambda x: modes.jacobian(f, x, mode="auto", basis="xla"))(x)
    np.testing.assert_allclose(got, jax.jit(jax.jacrev(f))(x), rtol=0, atol=1e-12)


def test_large_banded_jacobian_in_sparse_output():
    n = 20_000
    f, x, pattern = examples.family("tridiagonal", n, dtype=jnp.float64)
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    assert jac.coloring.products == 3
    J = jac(x)
    assert J.shape == (n, n) and J.nse == pattern.nnz
    rows, cols = np.asarray(J.indices).T
    main = np.asarray(J.data)[rows == cols]
    np.testing.assert_allclose(main, 3 * np.asarray(x) ** 2 - 2, rtol=1e-12)
    below = np.asarray(J.data)[rows == cols + 1]
    np.testing.assert_allclose(below, np.cos(np.asarray(x)[:-1]), rtol=1e-12)


@pytest.mark.slow
def test_n_100000_tridiagonal_sparse_output():
    n = 100_000
    f, x, _ = examples.family("tridiagonal", n, dtype=jnp.float64)
    J = modes.jacobian(f, x, mode="sparse", sparse_output=True)
    assert J.nse == 3 * n - 2
    rows, cols = np.asarray(J.indices).T
    np.testing.assert_allclose(
        np.asarray(J.data)[rows == cols], 3 * np.asarray(x) ** 2 - 2, rtol=1e-12
    )


def _fake_rates(calls):
    def measure_rates():
        calls.append(1)
        pair = (1e-9 * len(calls), 2e-9)
        return {name: pair for name in _rates._RATE_NAMES} | {"flop": 1e-11, "compile": 0.07}

    return measure_rates


def test_model_rates_are_measured_once_per_machine_and_kept_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("BPJAX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_rates, "_MEMORY", {})
    calls = []
    monkeypatch.setattr(_rates, "_measure_rates", _fake_rates(calls))
    first = modes.model_rates()
    assert calls == [1] and (tmp_path / "rates.json").exists()
    # A new process: nothing in memory, the file answers.
    monkeypatch.setattr(_rates, "_MEMORY", {})
    assert modes.model_rates() == first and calls == [1]
    # Another machine (here: other XLA flags) gets its own entry.
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    modes.model_rates()
    assert calls == [1, 1]
    monkeypatch.delenv("XLA_FLAGS")
    # refresh measures again and replaces the kept entry.
    refreshed = modes.model_rates(refresh=True)
    assert calls == [1, 1, 1] and refreshed["write"][0] == pytest.approx(3e-9)
    monkeypatch.setattr(_rates, "_MEMORY", {})
    assert modes.model_rates() == refreshed


def test_model_rates_cache_survives_a_corrupt_file_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setattr(_rates, "_MEMORY", {})
    calls = []
    monkeypatch.setattr(_rates, "_measure_rates", _fake_rates(calls))
    (tmp_path / "rates.json").write_text('{"truncated')
    monkeypatch.setenv("BPJAX_CACHE_DIR", str(tmp_path))
    modes.model_rates()
    assert calls == [1]
    kept = json.loads((tmp_path / "rates.json").read_text())
    assert list(kept) == [_rates.machine_key(jax.default_backend())]
    # An entry missing a rate is measured again, not half-used.
    key = next(iter(kept))
    del kept[key]["scatter"]
    (tmp_path / "rates.json").write_text(json.dumps(kept))
    monkeypatch.setattr(_rates, "_MEMORY", {})
    modes.model_rates()
    assert calls == [1, 1]
    monkeypatch.setenv("BPJAX_CACHE_DIR", "off")
    monkeypatch.setattr(_rates, "_MEMORY", {})
    modes.model_rates()
    assert calls == [1, 1, 1] and _rates.cache_path() is None


def _published_rates(monkeypatch):
    """The rates of results/jacobians.json, so that choices do not depend on this machine."""
    rates = record_rates()
    monkeypatch.setattr(_rates, "_MEMORY", {_rates.machine_key(jax.default_backend()): rates})
    return rates


def test_calls_counts_compilation_so_a_few_calls_of_a_small_jacobian_skip_the_bicoloring(
    monkeypatch,
):
    _published_rates(monkeypatch)
    f, x, _ = examples.family("arrowhead", 256)
    steady = modes.jacobian_fn(f, x)
    once = modes.jacobian_fn(f, x, calls=1)
    many = modes.jacobian_fn(f, x, calls=100_000)
    # Runs 2-10x faster, compiles ~45 ms slower: worth it for many calls, not for one.
    assert steady.method == many.method == "bicoloring"
    assert once.method in ("fwd", "rev")
    table = once.choice.candidates
    assert table["bicoloring"]["run_seconds"] < table[once.method]["run_seconds"]
    assert table["bicoloring"]["compile_seconds"] > table[once.method]["compile_seconds"] == 0
    assert "over 1 call, compilation included" in once.choice.reason
    np.testing.assert_allclose(once(x), jax.jit(jax.jacrev(f))(x), rtol=1e-5, atol=1e-6)
    assert modes.choose_mode(f, x, calls=1).method == once.method
    # One call of a sub-millisecond Jacobian: LLVM at -O0 compiles faster than it loses.
    if jax.default_backend() == "cpu":
        assert once.compiler_options == _cost.FAST_COMPILE and "-O0" in once.choice.reason
    assert steady.compiler_options is None and many.compiler_options is None


def test_fast_compile_only_where_the_calls_cannot_lose_what_it_saves():
    r = {"compile": _cost._COMPILE_REFERENCE_SECONDS}
    saves, slower = _cost._FAST_COMPILE_SAVES, _cost._FAST_COMPILE_SLOWDOWN - 1
    assert _cost.fast_compile_pays(0.99 * saves / (10 * slower), 10, r)
    assert not _cost.fast_compile_pays(1.01 * saves / (10 * slower), 10, r)
    # a machine that compiles twice as slowly saves twice as much
    assert _cost.fast_compile_pays(1.5 * saves / (10 * slower), 10, {"compile": 2 * r["compile"]})


def test_measure_compiles_a_jacobian_fn_with_its_own_options(monkeypatch):
    _published_rates(monkeypatch)
    f, x, _ = examples.family("tridiagonal", 64)
    jac = modes.jacobian_fn(f, x, calls=1)
    assert jac.compiler_options is not None or jax.default_backend() != "cpu"
    compiled, seconds = measure.compile_fn(jac, x)
    np.testing.assert_allclose(compiled(x), jax.jit(jax.jacrev(f))(x), rtol=1e-5, atol=1e-6)
    assert seconds > 0
    # Inside a user's jit (options only go on a top-level jit) it runs with the user's.
    newton = jax.jit(lambda x: x - 0.1 * jac(x) @ f(x))
    np.testing.assert_allclose(
        newton(x), x - 0.1 * jax.jit(jax.jacrev(f))(x) @ f(x), rtol=1e-5, atol=1e-6
    )


def test_compile_model_prices_decompression_and_the_second_linearization():
    rates = {"compile": _cost._COMPILE_REFERENCE_SECONDS}
    f, x, pattern = examples.family("arrowhead", 512)
    methods = {c.name: c for c in modes._plan.plan(f, x, mode="auto").candidates}
    kw = {"nnz": pattern.nnz, "eqns": 12, "r": rates}
    dense = {k: _cost.compile_seconds(c, dense_output=True, **kw) for k, c in methods.items()}
    bcoo = {k: _cost.compile_seconds(c, dense_output=False, **kw) for k, c in methods.items()}
    assert dense["fwd"] == dense["rev"] == 0 < dense["bicoloring"]
    # BCOO output: the dense modes gather their nonzeros; a coloring skips the dense scatter.
    assert bcoo["fwd"] > 0 and bcoo["bicoloring"] < dense["bicoloring"]
    assert _cost.compile_seconds(
        methods["fwd"], dense_output=True, **kw | {"r": {"compile": 2 * rates["compile"]}}
    ) == 0 and _cost.compile_seconds(
        methods["bicoloring"], dense_output=True, **kw | {"r": {"compile": 2 * rates["compile"]}}
    ) == pytest.approx(2 * dense["bicoloring"])
    # The decompression grows with the nonzeros, the second linearization with f's size.
    more_nnz = _cost.compile_seconds(
        methods["bicoloring"], dense_output=True, **kw | {"nnz": pattern.nnz + 1000}
    )
    more_eqns = _cost.compile_seconds(methods["bicoloring"], dense_output=True, **kw | {"eqns": 13})
    assert more_nnz - dense["bicoloring"] == pytest.approx(0.45e-3)
    assert more_eqns - dense["bicoloring"] == pytest.approx(0.6 * 1.4e-3)


def test_compile_model_prices_a_dense_modes_mask():
    rates = {"compile": _cost._COMPILE_REFERENCE_SECONDS}
    f, x, pattern = examples.family("tridiagonal", 512)
    plan = modes._plan.plan(f, x, mode="auto")
    methods = {c.name: c for c in plan.candidates}
    kw = {"nnz": pattern.nnz, "eqns": 12, "r": rates}
    # A dense mode on a sparse pattern gathers and scatters the nonzeros, as a coloring's
    # decompression does (measured: 5-23 ms of compilation over the plain program).
    assert plan.masks(methods["rev"], sparse_output=False)
    assert not plan.masks(methods["rev"], sparse_output=True)
    assert not plan.masks(methods["columns"], sparse_output=False)
    masked = _cost.compile_seconds(methods["rev"], dense_output=True, masked=True, **kw)
    columns = _cost.compile_seconds(methods["columns"], dense_output=True, **kw)
    assert masked == pytest.approx(16e-3) and masked > columns > 0
    assert _cost.compile_seconds(methods["rev"], dense_output=False, masked=True, **kw) == 8e-3


def test_calls_price_the_mask_a_dense_mode_compiles(monkeypatch):
    # block_diagonal n = 1024 (record of 2026-12-04): rev with the mask compiled 14.5 ms
    # more than jax.jacrev and ran 5x slower than the columns' 16 JVPs; priced as if it
    # compiled like the plain program, it won calls=10 on "compiles faster" (1.37x the best
    # first use). With the mask priced, a coloring (16 products) compiles no slower.
    _published_rates(monkeypatch)
    f, x, _ = examples.family("block_diagonal", 1024)
    plan = modes._plan.plan(f, x, mode="auto")
    prices = _basis_model.ModelBasis().prices(plan, sparse_output=False, calls=10)
    assert prices["rev"]["compile_seconds"] > prices["columns"]["compile_seconds"]
    _, choice, _ = modes._auto.decide(plan, basis="model", calls=10)
    assert choice.method in ("columns", "rows")  # 16 products, not 1024 VJPs


def test_a_first_use_prices_a_dense_modes_bcoo_at_its_pessimistic_end(monkeypatch):
    # arrowhead n = 1024, BCOO, calls=10 (records of 2026-12-04/05): the model priced fwd
    # 2.4 ms a call where it ran 4.4-6.9 ms (an unfused concatenate writes n x n), and picked
    # it over the bicoloring, whose 30 ms more compilation the ten calls did earn back: 1.3-
    # 1.46x the best first use. At 3x, the bicoloring; the reason says why.
    _published_rates(monkeypatch)
    f, x, _ = examples.family("arrowhead", 1024)
    choice = modes.choose_mode(f, x, sparse_output=True, calls=10)
    assert choice.method == "bicoloring" and "fwd and rev priced at 3x" in choice.reason
    assert choice.candidates["fwd"]["pessimistic"] == _cost.BCOO_DENSE_UNDERPRICE == 3.0
    assert "pessimistic" not in choice.candidates["bicoloring"]
    monkeypatch.setattr(_cost, "BCOO_DENSE_UNDERPRICE", 1.0)
    assert modes.choose_mode(f, x, sparse_output=True, calls=10).method == "fwd"
    monkeypatch.setattr(_cost, "BCOO_DENSE_UNDERPRICE", 3.0)
    # Dense output, steady state, a dense pattern: the model's own prices.
    for kw in ({"sparse_output": False, "calls": 10}, {"sparse_output": True}):
        table = modes.choose_mode(f, x, **kw).candidates
        assert not any("pessimistic" in p for p in table.values())
    g, w, _ = examples.family("mlp_square", 64)
    table = modes.choose_mode(g, w, sparse_output=True, calls=10).candidates
    assert not any("pessimistic" in p for p in table.values())


def test_equations_counts_the_equations_of_nested_jaxprs():
    inner = jax.jit(lambda x: jnp.sin(x) * x)  # two equations inside one pjit

    def f(x):
        return inner(x) + 1.0

    closed = jax.make_jaxpr(f)(jnp.ones(3))
    assert len(closed.jaxpr.eqns) == 2  # the pjit and the add
    assert _cost.equations(closed.jaxpr) == 4


def test_a_coloring_with_one_color_per_column_or_row_builds_the_dense_program():
    f, x, pattern = examples.family("arrowhead", 32)  # one dense row and one dense column
    columns, rows = modes.color_columns(pattern), modes.color_rows(pattern)
    assert columns.products == rows.products == 32
    named = {_sparse.program_name(_sparse.colored_method(c)) for c in (columns, rows)} | {
        _sparse.program_name(_sparse.colored_method(modes.bicolor(pattern)))
    }
    assert named == {"fwd", "rev", "bicoloring"}
    tridiagonal = modes.color_columns(examples.family("tridiagonal", 32)[2])
    assert _sparse.program_name(_sparse.colored_method(tridiagonal)) == "columns"


@pytest.mark.parametrize("calls", [0, -3, 2.5, True, "10"])
def test_calls_must_be_a_positive_int(calls):
    f, x, _ = examples.family("tridiagonal", 16)
    with pytest.raises(ValueError, match=r"calls=.*int >= 1"):
        modes.jacobian_fn(f, x, calls=calls)
    with pytest.raises(ValueError, match=r"calls=.*int >= 1"):
        modes.choose_mode(f, x, calls=calls)


def test_calls_takes_numpy_integers():
    f, x, _ = examples.family("tridiagonal", 16)
    assert modes.jacobian_fn(f, x, calls=np.int64(3)).choice.reason.count("over 3 calls") == 1


def test_calls_needs_a_basis_that_can_price_compilation():
    f, x, _ = examples.family("tridiagonal", 16)
    with pytest.raises(ValueError, match="calls= needs basis='model' or 'probe' or 'timing'"):
        modes.choose_mode(f, x, basis="xla", calls=3)
