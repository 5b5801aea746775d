"""basis="probe" (jacobian_fn's default): the model decides where it can; where candidates
are within its uncertainty, a paired timing of those few ranks them.

The model's prices and the timings are replaced by fixed ones here, so each test states
the situation it checks (the real ones depend on the machine's measured rates)."""

import json

import jax
import numpy as np
import pytest
from conftest import record_rates

from bpjax import modes
from bpjax.measure import _timing
from bpjax.modes import _auto, _basis_probe, _plan, _probes, _rates, examples
from bpjax.modes._basis import close_to_best, per_call
from bpjax.modes._basis_model import ModelBasis


@pytest.fixture
def fake(monkeypatch):
    """``fake(model={...}, measured={...})``: the model's seconds per candidate and the
    probe's measured seconds per call; returns the list of programs the probe compiled."""
    compiled = []

    def setup(model, measured=None, structural=None):
        def prices(self, plan, *, sparse_output, calls):
            seconds = {c.name: model.get(c.name, 1.0) for c in plan.candidates}
            if calls:  # priced per call over `calls`, no compilation difference
                priced = {k: per_call(v, 0.0, calls) for k, v in seconds.items()}
            else:
                priced = {k: {"seconds": v} for k, v in seconds.items()}
            for k, v in (structural or {}).items():
                priced[k]["structural"] = v
            return priced

        def compile_all(fns, *args):
            compiled.extend(fns)
            return {name: (lambda *a, name=name: f"compiled {name}") for name in fns}

        def run_rounds(steps, calls, *, rounds, **_):
            return {name: [(measured or {}).get(name, 1.0)] * rounds for name in steps}

        monkeypatch.setattr(ModelBasis, "prices", prices)
        # Under measure.paired_seconds, which the probe calls: its pairing runs for real.
        monkeypatch.setattr(_timing, "compile_all", compile_all)
        monkeypatch.setattr(_timing, "calibrate", lambda steps, **_: dict.fromkeys(steps, 1))
        monkeypatch.setattr(_timing, "run_rounds", run_rounds)
        return compiled

    return setup


def _band():
    f, x, _ = examples.structure("band k=2", dtype=np.float32)
    return f, x


def test_a_near_tie_is_timed_and_the_faster_orientation_wins(fake):
    # The model: rows 20% dearer than columns, within its 25% band: a tie it breaks by fewer
    # VJPs (columns). Measured, rows run twice as fast.
    compiled = fake({"columns": 1e-3, "rows": 1.2e-3}, {"columns": 2e-3, "rows": 1e-3})
    f, x = _band()
    assert modes.choose_mode(f, x, sparse_output=True).method == "columns"
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    # jacobian_fn leaves the probe to its calls: nothing timed yet, the model's pick stands.
    assert jac.method == "columns" and jac.probe_pending and compiled == []
    assert "a probe will time them once the calls have run about" in jac.choice.reason
    assert repr(jac).endswith(f"probe_due_in={jac.probe_due_in})")
    assert jac.settle() is jac and not jac.probe_pending and jac.probe_seconds > 0
    assert jac.method == "rows" and sorted(compiled) == ["columns", "rows"]
    assert "measured 1 ms, 2.00x cheaper" in jac.choice.reason
    assert "both compiled and timed" in jac.choice.reason
    assert jac.choice.candidates["rows"]["measured"] and jac.choice.basis == "probe"


def test_within_its_band_the_model_preference_stands(fake):
    # Rows measured 5% faster: inside the probe's 10% band, so noise cannot flip the choice.
    fake({"columns": 1e-3, "rows": 1.1e-3}, {"columns": 1.05e-3, "rows": 1e-3})
    assert _basis_probe.ProbeBasis.band == 1.10
    f, x = _band()
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).settle()
    assert jac.method == "columns" and jac.choice.candidates["rows"]["measured"]


def test_a_clear_model_choice_compiles_nothing(fake):
    compiled = fake({"columns": 1e-3, "rows": 2e-3})  # rows 2x dearer: outside the band
    f, x = _band()
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    assert compiled == [] and jac.method == "columns" and not jac.probe_pending
    assert jac.settle().method == "columns" and compiled == [] and jac.probe_seconds is None


def test_with_calls_the_probe_is_the_model(fake):
    compiled = fake({"columns": 1.2e-3, "rows": 1e-3})
    f, x = _band()
    probe = modes.choose_mode(f, x, basis="probe", calls=3, sparse_output=True)
    model = modes.choose_mode(f, x, basis="model", calls=3, sparse_output=True)
    # Rows priced 20% cheaper: a near-tie, broken as the model breaks it (fewer VJPs).
    assert compiled == [] and probe.method == model.method == "columns"


def test_a_jacobian_too_quick_to_repay_the_probe_is_left_to_the_model(fake):
    # choose_mode(basis="probe") decides once, with no calls to earn the probe back: below
    # PROBE_MIN_SECONDS the model decides. jacobian_fn's calls decide when it pays instead,
    # so it has no such floor: the probe is left pending, and settles for the faster rows.
    tiny = _basis_probe.PROBE_MIN_SECONDS / 10
    compiled = fake({"columns": tiny, "rows": 1.1 * tiny}, {"columns": 2.0, "rows": 1.0})
    f, x = _band()
    choice = modes.choose_mode(f, x, basis="probe", sparse_output=True)
    assert choice.method == "columns" and compiled == []
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    assert jac.method == "columns" and jac.probe_pending and compiled == []
    assert jac.settle().method == "rows" and len(compiled) == 2


def test_the_calls_run_the_probe_once_they_have_cost_what_it_will(fake):
    # Priced 0.1 s a call, a probe of two candidates costs 2 (1.5 c + 11 x 0.1 s), c the
    # reference compilation of the rates: the call that brings the model's price of the
    # calls to that runs it, and is served by the probe's executable of the winner.
    compiled = fake({"columns": 0.1, "rows": 0.11}, {"columns": 2e-3, "rows": 1e-3})
    f, x = _band()
    r = _rates.rates(jax.default_backend())
    budget = _basis_probe.probe_cost(2, 0.1, r)
    assert budget == pytest.approx(2 * (1.5 * r["compile"] + 11 * 0.1))
    due = int(np.ceil(budget / 0.1 - 1e-9))
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    jax.jit(jac)(x)  # traced into another program: not a call of jac's own
    for _ in range(due - 1):
        assert not isinstance(jac(x), str)  # the model's pick, compiled for real
    assert jac.probe_pending and compiled == [] and jac.method == "columns"
    assert jac(x) == "compiled rows"  # the due-th call: probed, then served by the winner
    assert not jac.probe_pending and jac.method == "rows" and len(compiled) == 2
    assert jac(x) == "compiled rows" and len(compiled) == 2  # probed once


def test_calls_from_several_threads_run_the_probe_once(fake):
    import threading

    compiled = fake({"columns": 0.1, "rows": 0.11}, {"columns": 2e-3, "rows": 1e-3})
    f, x = _band()
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    due = jac.probe_due_in
    jax.block_until_ready(jac(x))  # compiled before the threads start
    threads = [threading.Thread(target=lambda: [jac(x) for _ in range(due)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(compiled) == 2 and jac.method == "rows" and not jac.probe_pending


def test_a_probe_that_fails_in_a_call_warns_and_the_calls_keep_the_models_pick(fake, monkeypatch):
    fake({"columns": 1e-3, "rows": 1.1e-3}, {"columns": 2e-3, "rows": 1e-3})

    def broken(fns, *args):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(_timing, "compile_all", broken)
    monkeypatch.setattr(_basis_probe, "probe_cost", lambda *a: 0.0)  # due at the first call
    f, x = _band()
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True)
    want = modes.jacobian_fn(f, x, mode="sparse", coloring="columns", sparse_output=True)(x)
    with pytest.warns(RuntimeWarning, match="the probe its calls ran failed .*no compiler"):
        got = jac(x)
    np.testing.assert_array_equal(got.data, want.data)
    assert jac.method == "columns" and not jac.probe_pending  # not tried again
    assert jac.settle() is jac  # nothing pending: nothing raised


def test_the_probe_compiled_program_serves_the_calls(fake):
    # The probe compiled both candidates for x while deciding; the JacobianFn calls the
    # chosen one's executable rather than compiling the program a second time.
    fake({"columns": 1e-3, "rows": 1.1e-3}, {"columns": 2e-3, "rows": 1e-3})
    f, x = _band()
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).settle()
    assert jac.method == "rows"
    assert jac(x) == "compiled rows"  # the fake executable's answer, so it was the one called
    assert "compiled_program" not in jac.choice.candidates["rows"]


class _CompilesItsPick(modes.CostBasis):
    """A basis that compiles the candidate it picks, as the probe does, and counts calls."""

    name, verb = "compiles", "counted"

    def __init__(self):
        self.calls = 0

    def prices(self, plan, *, sparse_output, calls):
        import jax

        from bpjax.modes._basis import COMPILED

        best = min(plan.candidates, key=lambda c: c.products)
        compiled = jax.jit(plan.user_program(best, sparse_output=sparse_output))
        compiled = compiled.lower(plan.x).compile()

        def counted(x):
            self.calls += 1
            return compiled(x)

        prices = {c.name: {"seconds": float(c.products)} for c in plan.candidates}
        prices[best.name][COMPILED] = counted
        return prices


def test_a_basis_compiled_program_is_called_and_other_shapes_get_the_planned_for_error():
    import jax
    import jax.numpy as jnp

    def f(x):
        return {"d": x[1:] * x[:-1], "s": jnp.sin(x)}

    x = jnp.linspace(0.1, 1.0, 12)
    basis = _CompilesItsPick()
    jac = modes.jacobian_fn(f, x, basis=basis)
    got = jac(x)
    assert basis.calls == 1
    want = jax.jit(jax.jacrev(f))(x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match="planned for inputs .* Call jacobian_fn again"):
        jac(jnp.ones(7))
    assert basis.calls == 2  # tried, refused by the executable, explained by the jit path


def test_inside_its_band_fewer_vjps_breaks_a_tie_of_equal_products(fake):
    # Square f: fwd and rev need the same number of products. Priced within the model's 25%
    # band, either way round, fewer VJPs decides: the model's order there follows its
    # calibration's noise (see _auto._TIE_BREAKS).
    f, x, _ = examples.family("mlp_square", 16)
    for fwd, rev in ((1.2e-5, 1e-5), (1.05e-5, 1e-5), (1e-5, 1.2e-5), (1e-5, 1e-5)):
        fake({"fwd": fwd, "rev": rev})
        choice = modes.choose_mode(f, x, colorings=False)
        assert choice.method == "fwd" and "preferred as it needs fewer VJPs" in choice.reason
    fake({"fwd": 1.3e-5, "rev": 1e-5})  # beyond the band: the model's cheaper
    choice = modes.choose_mode(f, x, colorings=False)
    assert choice.method == "rev" and "1.30x cheaper than forward mode" in choice.reason


def test_a_tie_goes_to_the_cheaper_structure_not_the_cheaper_rates(fake):
    # Within the band the model prices fwd cheaper (its JVP rate), but rev cheaper in what
    # it prices from the structure (fwd writes J transposed): rev, whatever the rates say.
    f, x, _ = examples.family("mlp_square", 16)
    fake({"fwd": 1e-5, "rev": 1.1e-5}, structural={"fwd": 1.3e-5, "rev": 1e-5})
    choice = modes.choose_mode(f, x, colorings=False)
    assert choice.method == "rev"
    assert "preferred as it is the cheaper by the model's structural costs" in choice.reason
    # Closer than the gap: fewer VJPs.
    fake({"fwd": 1e-5, "rev": 1.1e-5}, structural={"fwd": 1.03e-5, "rev": 1e-5})
    assert modes.choose_mode(f, x, colorings=False).method == "fwd"


def test_the_structural_price_does_not_move_with_the_jvp_and_vjp_rates(monkeypatch):
    # block_diagonal: 16 JVPs or 16 VJPs, priced alike but for the two rates. Scaling the
    # JVP rate 1.6x (as far as calibrations moved it) flips the model's full order and
    # leaves the structural one, and the choice, where they were.
    # From the record's rates with the two made alike (their geometric mean), so the flip
    # does not depend on where one record's calibration put them (the records of 2026-12-04
    # and -05 read the JVP/VJP rate ratio at 16 MiB as 0.94 and 0.45).
    rates = record_rates()
    alike = tuple(float(np.sqrt(a * b)) for a, b in zip(rates["jvp"], rates["vjp"], strict=True))
    f, x, _ = examples.family("block_diagonal", 256)
    plan = _plan.plan(f, x, mode="auto", sparse_output=True)
    choices, structural = [], []
    for k in (1 / 1.6, 1.6):
        r = {**rates, "jvp": tuple(k * v for v in alike), "vjp": alike}
        monkeypatch.setattr(_rates, "_MEMORY", {_rates.machine_key(jax.default_backend()): r})
        prices = ModelBasis().prices(plan, sparse_output=True, calls=None)
        structural.append(prices["rows"]["structural"] / prices["columns"]["structural"])
        choices.append(
            (
                prices["columns"]["seconds"] < prices["rows"]["seconds"],
                _auto._pick(plan.candidates, prices, ModelBasis())[0].name,
            )
        )
    assert [cheaper for cheaper, _ in choices] == [True, False]  # the full order flips
    assert structural[0] == pytest.approx(structural[1])
    assert [name for _, name in choices] == ["columns", "columns"]


def test_with_calls_the_structural_price_shares_the_compilation_too(monkeypatch):
    # A tie with calls= is a tie per call, compilation included: the structural price
    # carries each candidate's compile difference over the calls, as "seconds" does.
    r = record_rates()
    monkeypatch.setattr(_rates, "_MEMORY", {_rates.machine_key(jax.default_backend()): r})
    f, x, _ = examples.family("arrowhead", 256)
    plan = _plan.plan(f, x, mode="auto")
    steady = ModelBasis().prices(plan, sparse_output=False, calls=None)
    few = ModelBasis().prices(plan, sparse_output=False, calls=10)
    assert len({p["compile_seconds"] for p in few.values()}) > 1  # they differ here
    for name, p in few.items():
        share = p["compile_seconds"] / 10
        assert p["structural"] == pytest.approx(steady[name]["structural"] + share)


def test_a_gap_that_is_only_the_jvp_vjp_rates_is_timed(fake):
    # Rows priced 1.3x columns, past the model's band, but alike in structure (the two
    # orientations differ only by the calibration's JVP and VJP rates): timed; rows win.
    compiled = fake(
        {"columns": 1e-3, "rows": 1.3e-3},
        {"columns": 2e-3, "rows": 1e-3},
        structural={"columns": 1e-3, "rows": 1e-3},
    )
    f, x = _band()
    jac = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).settle()
    assert sorted(compiled) == ["columns", "rows"] and jac.method == "rows"
    # Apart in structure too: the model decides, nothing compiled.
    compiled.clear()
    fake(
        {"columns": 1e-3, "rows": 1.3e-3},
        {"columns": 2e-3, "rows": 1e-3},
        structural={"columns": 1e-3, "rows": 1.3e-3},
    )
    assert modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).method == "columns"
    assert compiled == []


def test_close_to_best_reads_the_structure_only_of_the_models_prices():
    class C:
        def __init__(self, name):
            self.name = name

    a, b = C("a"), C("b")
    model = {"a": {"seconds": 1.0, "structural": 1.0}, "b": {"seconds": 2.0, "structural": 1.1}}
    assert close_to_best([a, b], model, 1.25) == [a, b]
    measured = {k: {**v, "measured": True} for k, v in model.items()}
    assert close_to_best([a, b], measured, 1.25) == [a]
    assert close_to_best(
        [a, b], {k: {"seconds": v["seconds"]} for k, v in model.items()}, 1.25
    ) == [a]


def test_the_reason_names_the_rule_that_put_the_runner_up_behind():
    class C:
        def __init__(self, name, products, vjps):
            self.name, self.products, self.vjps = name, products, vjps

    a, b, c = C("a", 16, 16), C("b", 16, 0), C("c", 32, 0)
    winner, why = _auto._break_ties([a, b, c], {k: {} for k in "abc"})
    assert winner is b
    assert why == {"c": "needs fewer products", "a": "needs fewer VJPs"}
    # Alike in every rule: the first wins, and the reason says the other only came second.
    d = C("d", 16, 0)
    winner, why = _auto._break_ties([b, d], {k: {} for k in "bd"})
    assert winner is b and why == {"d": "comes first among equals"}


def test_fewer_products_come_before_fewer_vjps(fake):
    # columns (a few JVPs) and rev (100 VJPs) priced within the band, rev the cheaper.
    f, x, _ = examples.family("tridiagonal", 100)
    fake({"columns": 1.1e-5, "rev": 1e-5, "fwd": 1.0, "rows": 1.0})
    choice = modes.choose_mode(f, x)
    assert choice.method == "columns" and "preferred as it needs fewer products" in choice.reason


def test_a_probe_is_kept_and_a_later_process_reads_it_instead_of_timing(
    fake, tmp_path, monkeypatch
):
    monkeypatch.setenv("BPJAX_CACHE_DIR", str(tmp_path))
    compiled = fake({"columns": 1e-3, "rows": 1.1e-3}, {"columns": 2e-3, "rows": 1e-3})
    f, x = _band()
    first = modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).settle()
    assert first.method == "rows" and len(compiled) == 2 and (tmp_path / "probes.json").exists()
    # Another process deciding the same Jacobian (a new function object, the same jaxpr):
    # the kept times decide; nothing is compiled or timed, and the calls compile the program.
    second = modes.jacobian_fn(lambda x: f(x), x, mode="sparse", sparse_output=True)
    assert len(compiled) == 2 and second.method == "rows" and second._compiled is None
    assert not second.probe_pending
    assert second.choice.candidates["rows"]["kept"] and "earlier probe" in second.choice.reason
    assert "measured 1 ms, 2.00x cheaper" in second.choice.reason
    want = modes.jacobian_fn(f, x, mode="sparse", coloring="rows", sparse_output=True)(x)
    np.testing.assert_array_equal(second(x).data, want.data)
    # What the times depend on is part of the key: the output format, the input's dtype.
    modes.jacobian_fn(f, x, mode="sparse").settle()
    assert len(compiled) == 4
    modes.jacobian_fn(f, np.asarray(x, np.float64), mode="sparse", sparse_output=True).settle()
    assert len(compiled) == 6
    assert modes.forget_probes() == 3
    modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).settle()
    assert len(compiled) == 8


def test_with_the_cache_off_nothing_is_kept(fake, monkeypatch):
    monkeypatch.setenv("BPJAX_CACHE_DIR", "off")
    compiled = fake({"columns": 1e-3, "rows": 1.1e-3}, {"columns": 2e-3, "rows": 1e-3})
    f, x = _band()
    for _ in range(2):
        modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).settle()
    assert len(compiled) == 4 and modes.forget_probes() == 0


def test_a_kept_probe_that_does_not_fit_is_measured_again(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("BPJAX_CACHE_DIR", str(tmp_path))
    compiled = fake({"columns": 1e-3, "rows": 1.1e-3}, {"columns": 2e-3, "rows": 1e-3})
    f, x = _band()
    (tmp_path / "probes.json").write_text('{"truncated')
    modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).settle()
    assert len(compiled) == 2
    kept = json.loads((tmp_path / "probes.json").read_text())
    (digest,) = kept
    assert set(kept[digest]["seconds"]) == {"columns", "rows"}
    # An entry for other candidates than those now timed is not used.
    kept[digest]["seconds"] = {"columns": 1e-3}
    (tmp_path / "probes.json").write_text(json.dumps(kept))
    modes.jacobian_fn(f, x, mode="sparse", sparse_output=True).settle()
    assert len(compiled) == 4


def test_only_the_most_recent_probes_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("BPJAX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_probes, "KEEP", 3)
    for i in range(5):
        _probes.keep(f"d{i}", {"columns": float(i)})
    kept = json.loads((tmp_path / "probes.json").read_text())
    assert sorted(kept) == ["d2", "d3", "d4"]
    assert _probes.kept("d4", ["columns"]) == {"columns": 4.0}
    assert _probes.kept("d0", ["columns"]) is None


def test_the_other_direction_is_timed_where_the_model_prices_it_within_3x(fake):
    # The model: reverse mode at half forward mode's price (past its band, no tie); run,
    # forward mode is 4x faster, as on chains of transcendental steps around a gather.
    compiled = fake({"rev": 0.5e-3, "fwd": 1e-3}, {"rev": 2e-3, "fwd": 0.5e-3})
    f, x = _band()
    jac = modes.jacobian_fn(f, x, sparse_output=True).settle()
    assert jac.method == "fwd" and sorted(compiled) == ["fwd", "rev"]
    assert "4.00x cheaper than reverse mode" in jac.choice.reason
    # Beyond DIRECTIONS the model's order stands, and nothing is compiled.
    compiled.clear()
    assert _basis_probe.DIRECTIONS == 3.0
    fake({"rev": 0.3e-3, "fwd": 1e-3}, {"rev": 2e-3, "fwd": 0.5e-3})
    assert modes.jacobian_fn(f, x, sparse_output=True).method == "rev" and compiled == []
    # A coloring picked: its other orientation is timed only inside the band.
    fake({"columns": 0.5e-3, "rows": 1e-3, "rev": 1e-3}, {"columns": 2e-3, "rows": 0.5e-3})
    assert modes.jacobian_fn(f, x, sparse_output=True).method == "columns" and compiled == []


def test_a_kept_probe_is_keyed_by_the_gather_indices_not_by_the_weights():
    x = np.linspace(-1.0, 1.0, 64, dtype=np.float32)
    w1, w2 = np.ones(64, np.float32), np.full(64, 2.0, np.float32)
    i1, i2 = np.arange(16), np.arange(16)[::-1].copy()

    def key(index, weights):
        return _probes.key(lambda v: jax.numpy.sin(v * weights)[index], x)

    assert key(i1, w1) == key(i1, w2)  # the same program, other float values
    assert key(i1, w1) != key(i2, w1)  # other indices: another gather
