"""The README's headline table: one main figure per experiment, from the records' summaries."""

from __future__ import annotations

from collections.abc import Callable

from bpjax.tables._common import compact, entries, number, ratio, table


def _fraction(x) -> str:
    return f"{number(x):.0%}"


def _last(record: dict, name: str) -> dict:
    """The grid point of the last summary entry ``name`` of ``record`` (sizes are run from
    smallest to largest)."""
    found = entries(record, name)
    if not found:
        raise KeyError(f"tables: results/{record.get('name')}.json has no summary entry {name}")
    return found[-1]["at"]


# (what it shows, record, summary entry name, its grid point, format). The grid point is a
# dict, or a function of the record giving one. One line per experiment's main figure; the
# findings pages carry the rest. ``{size}`` in the text is the grid point's size.
HEADLINES: list[tuple[str, str, str, dict | Callable[[dict], dict], Callable]] = [
    (
        "hand-written VJPs (`rev`) ÷ JAX autodiff (`ref`), training step, 784-512-512-10",
        "rules_overhead",
        "rev_over_ref",
        {"layers": "784-512-512-10", "batch": 256},
        ratio,
    ),
    (
        "first ÷ last hidden layer's gradient norm, plain sigmoid net, 64 layers",
        "vanishing",
        "first_over_last_grad_norm",
        {"activation": "sigmoid", "arch": "plain", "L": 64},
        compact,
    ),
    (
        "… the same with residual connections",
        "vanishing",
        "first_over_last_grad_norm",
        {"activation": "sigmoid", "arch": "residual", "L": 64},
        compact,
    ),
    (
        "test accuracy at depth 64, plain sigmoid net (chance is 0.10)",
        "depth",
        "test_acc",
        {"activation": "sigmoid", "arch": "plain", "depth": 64},
        lambda x: f"{number(x):.2f}",
    ),
    (
        "… the same with residual connections",
        "depth",
        "test_acc",
        {"activation": "sigmoid", "arch": "residual", "depth": 64},
        lambda x: f"{number(x):.2f}",
    ),
    (
        "automatic fwd/rev choice (the default run-time model) within 10% of the faster mode, "
        "share of the fwd/rev grid",
        "mode_cost",
        "auto_within_10pct",
        {"basis": "model"},
        _fraction,
    ),
    (
        "`jacobian_fn`'s choice among fwd, rev and colorings within 10% of the best contender "
        "(asdex and sparsejac included), dense output, share of the 8-family grid",
        "jacobians",
        "auto_within_10pct",
        {"output": "dense", "timing": "choice"},
        _fraction,
    ),
    (
        "… its first use told `calls=10` (decision + compilation + 10 calls, every contender "
        "compiled cold; bpjax may then compile at LLVM -O0, peers keep their defaults) within "
        "10% of the best contender's, share of all 41 points",
        "jacobians",
        "auto_within_10pct",
        {"output": "all", "timing": "few_setup"},
        _fraction,
    ),
    (
        "sparse Jacobian by coloring: faster of jacfwd/jacrev ÷ bpjax, tridiagonal n = 4096",
        "jacobians",
        "faster_jax_over_sparse",
        {"family": "tridiagonal", "n": 4096, "output": "bcoo"},
        ratio,
    ),
    (
        "bpjax sparse ÷ asdex on the same tridiagonal Jacobian, paired round by round "
        "(BCOO output; below 1: faster)",
        "jacobians",
        "sparse_over_asdex",
        {"family": "tridiagonal", "n": 4096, "output": "bcoo"},
        ratio,
    ),
    (
        "arrowhead n = 2048: best one-sided method ÷ mixed-mode bicoloring (BCOO output)",
        "jacobians",
        "one_sided_over_bicoloring",
        {"family": "arrowhead", "n": 2048, "output": "bcoo"},
        ratio,
    ),
    (
        "√L checkpointing: compiled temporary memory ÷ storing every activation, L = 1024",
        "remat_memory",
        "compiled_temp_over_none",
        {"strategy": "sqrt"},
        lambda x: f"{number(x):.3f}",
    ),
    (
        "binomial checkpointing (10 checkpoints): step time ÷ storing every activation",
        "remat_memory",
        "step_time_over_none",
        {"strategy": "binomial c=10"},
        ratio,
    ),
    (
        "online checkpointing (`remat.while_loop`, trip count unknown): time per gradient ÷ "
        "Equinox's checkpointed while loop, median over L = 100, 1000 and c = 4, 10, 30",
        "online_remat",
        "time_over_equinox_median",
        {},
        ratio,
    ),
    (
        "sparse Hessian by coloring: `jax.hessian` ÷ bpjax, 2-D stencil energy n = 4096 (BCOO)",
        "hessians",
        "jax_hessian_over_auto",
        {"family": "stencil", "n": 4096, "output": "bcoo"},
        ratio,
    ),
    (
        "bpjax `rev` training step ÷ the fastest peer (PyTorch, Flax, NumPy), {size}",
        "peers",
        "rev_over_best_peer",
        lambda record: _last(record, "rev_over_best_peer"),
        ratio,
    ),
    (
        "… the same at {size}, from the full sweep (where bpjax loses: PyTorch's "
        "GEMMs are faster there)",
        "full/peers",
        "rev_over_best_peer",
        lambda record: _last(record, "rev_over_best_peer"),
        ratio,
    ),
]


def _value(records: dict, name: str, entry: str, at: dict):
    """The summary value, or an error naming the experiment that renamed it."""
    found = [e for e in entries(records[name], entry) if e["at"] == at]
    if not found:
        points = [e["at"] for e in entries(records[name], entry)]
        raise KeyError(
            f"tables: results/{name}.json has no summary entry {entry} at {at} (it has it at "
            f"{points}); the experiment renamed it, so update HEADLINES in bpjax/tables"
        )
    return found[0]["value"]


def headlines_table(records: dict) -> str:
    """One main figure per experiment (:data:`HEADLINES`), with the size it was measured at,
    a link to the findings page that shows it (relative to the repository root, for the
    README) and the CPU, from the records' summaries (quick profile, as ``make reproduce``
    writes)."""
    body = []
    for what, name, entry, at, fmt in HEADLINES:
        at = at(records[name]) if callable(at) else at
        if "{size}" in what:
            what = what.format(size=f"{at['layers']}, batch {at['batch']}")
        env = records[name]["environment"]
        where = env.get("cpu_model") or env.get("device") or "?"
        page = f"[{_FINDINGS[name]}](docs/findings/{_FINDINGS[name]}.md)"
        jax = f"jax {env.get('jax', '?')}"
        figure = fmt(_value(records, name, entry, at))
        body.append([what, figure, page, f"`{name}`, {where}, {jax}"])
    return table(["finding", "figure", "shown on", "record, CPU, JAX"], body)


# The findings page (docs/findings/<page>.md) that shows each record's figures.
_FINDINGS = {
    "rules_overhead": "rules_overhead",
    "vanishing": "vanishing",
    "depth": "depth",
    "mode_cost": "modes",
    "jacobians": "modes",
    "remat_memory": "remat",
    "peers": "bench",
    "full/peers": "bench",
    "online_remat": "online_remat",
    "hessians": "hessians",
}


def bench_table(records: dict) -> str:
    """``bpjax bench --full``'s table (:func:`bpjax.bench.readme_table` of
    ``results/full/peers.json``)."""
    from bpjax import bench

    return bench.readme_table(records["full/peers"]["data"])
