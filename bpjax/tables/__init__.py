"""Tables of results for the README and the findings pages, built from the result records.

Each builder is a function of the records by name (``{"depth": record, ...}``, as
:func:`bpjax.report.readme_tables` loads them from ``results/``) returning a Markdown table.
:data:`TABLES` names them; a Markdown file asks for one with a block

    <!-- table:NAME -->
    <!-- /table -->

that ``python -m bpjax.report --readme`` fills, so every number in such a table is the
committed result's.

Builders read a record's ``data``, or its summary entries by name and grid point
(:func:`bpjax.results.value`); none parses the entries' text. The modules: ``_training``
(depth, vanishing, exploding, rules' overhead), ``_remat``, ``_sparse`` (Jacobians,
Hessians), ``_headlines`` (the README's one figure per experiment).
"""

from __future__ import annotations

from collections.abc import Callable

from bpjax.tables._common import compact
from bpjax.tables._derived import DERIVED as DERIVED  # the derivations, by record name
from bpjax.tables._derived import derive
from bpjax.tables._headlines import HEADLINES as HEADLINES  # the README's headline rows
from bpjax.tables._headlines import bench_table, headlines_table
from bpjax.tables._remat import online_remat_table, online_remat_uses_table, remat_table
from bpjax.tables._sparse import (
    hessians_table,
    jacobian_colors_table,
    jacobian_structures_table,
    jacobians_table,
)
from bpjax.tables._training import (
    depth_table,
    exploding_growth_table,
    exploding_training_table,
    rules_overhead_table,
    vanishing_table,
    weight_gradient_steps_table,
    weight_gradient_table,
)

__all__ = [
    "TABLES",
    "SOURCES",
    "derive",
    "compact",
    "provenance",
    "depth_table",
    "vanishing_table",
    "exploding_growth_table",
    "exploding_training_table",
    "headlines_table",
    "rules_overhead_table",
    "remat_table",
    "jacobians_table",
    "jacobian_colors_table",
    "bench_table",
    "online_remat_table",
    "online_remat_uses_table",
    "hessians_table",
    "jacobian_structures_table",
    "weight_gradient_table",
    "weight_gradient_steps_table",
]


TABLES: dict[str, Callable[[dict], str]] = {
    "depth": depth_table,
    "vanishing": vanishing_table,
    "exploding-growth": exploding_growth_table,
    "exploding-training": exploding_training_table,
    "headlines": headlines_table,
    "rules-overhead": rules_overhead_table,
    "remat": remat_table,
    "jacobians": jacobians_table,
    "jacobian-colors": jacobian_colors_table,
    "bench": bench_table,
    "online-remat": online_remat_table,
    "online-remat-uses": online_remat_uses_table,
    "hessians": hessians_table,
    "jacobian-structures": jacobian_structures_table,
    "weight-gradient": weight_gradient_table,
    "weight-gradient-steps": weight_gradient_steps_table,
}
"""README table name → function of the records by name (``{"depth": record, ...}``)."""

# The records each table reads, named under it with the JAX, Python and CPU they were measured
# with (the headlines table names them per row).
SOURCES: dict[str, tuple[str, ...]] = {
    "depth": ("depth",),
    "vanishing": ("vanishing",),
    "exploding-growth": ("exploding",),
    "exploding-training": ("exploding",),
    "headlines": (),
    "rules-overhead": ("rules_overhead",),
    "remat": ("remat_memory",),
    "jacobians": ("jacobians",),
    "jacobian-colors": ("jacobians",),
    "bench": ("full/peers",),
    "online-remat": ("online_remat",),
    "online-remat-uses": ("online_remat",),
    "hessians": ("hessians",),
    "jacobian-structures": ("jacobian_structures",),
    "weight-gradient": ("weight_gradient",),
    "weight-gradient-steps": ("weight_gradient",),
}


def provenance(records: dict, names: tuple[str, ...]) -> str:
    """One line naming what records ``names`` were measured with: JAX, Python, CPU, date.

    Example: ``Record `depth` (quick profile, 2026-12-03): jax 0.10.1, Python 3.11.7, Intel(R)
    Xeon(R) Processor, 2 cores.``
    """
    parts = []
    for name in names:
        rec = records[name]
        env = rec["environment"]
        cpu = env.get("cpu_model") or env.get("machine") or "?"
        parts.append(
            f"Record `{name}` ({rec.get('profile')} profile, {str(rec.get('created'))[:10]}): "
            f"jax {env.get('jax', '?')}, Python {env.get('python', '?')}, {cpu}, "
            f"{env.get('cpu_count', '?')} cores."
        )
    return " ".join(parts)
