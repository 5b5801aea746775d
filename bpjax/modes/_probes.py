"""The probe's measurements, kept: a Jacobian probed once on a machine is not probed again.

The probe (:mod:`bpjax.modes._basis_probe`) compiles and times the candidates the model
cannot separate: 0.15-1.2 s on a 2-core CPU, several times the chosen program's own
compilation. A later process that plans the same Jacobian on the same machine reads the
measured times instead (as XLA's autotuning keeps its results), and decides in the model's
milliseconds.

"The same Jacobian" is the key (:func:`key`): the machine (:func:`~bpjax.modes._rates.
machine_key`: backend, device, CPU, cores, JAX version, ``XLA_FLAGS``); ``f``'s jaxpr
(its operations, shapes and dtypes, and its integer constants' values: the indices of its
gathers; not its float constants' values, which the programs' run times do not depend
on); the input and output pytrees; the output format; and the candidates timed, with
their products and colorings. Kept in ``probes.json`` beside the rates under
``$BPJAX_CACHE_DIR`` (``off``: nothing kept), the :data:`KEEP` most recent;
:func:`forget_probes` empties it.
"""

from __future__ import annotations

import hashlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from bpjax.modes import _rates

FILE = "probes.json"
KEEP = 512  # entries kept; the oldest go first
_SCHEMA = 1  # bump when what a kept probe means changes (its rounds, its programs)


def key(fn, x, *parts, arrays=(), jaxpr=None) -> str:
    """A digest of what a probe's times depend on: the machine; ``fn``'s jaxpr at ``x``
    (``jaxpr``: that closed jaxpr, if already traced): its operations, shapes and dtypes,
    and the values of its integer constants (indices: they decide what a gather reads),
    not of its float constants (weights: the run time does not depend on them); and
    ``parts`` (strings: the pytrees, the output layout, the candidates) and ``arrays``
    (their colorings)."""
    closed = jaxpr if jaxpr is not None else jax.make_jaxpr(fn)(x)
    digest = hashlib.sha256()
    for part in (
        f"schema {_SCHEMA}",
        _rates.machine_key(jax.default_backend()),
        str(closed),
        *parts,
    ):
        digest.update(str(part).encode() + b"\0")
    indices = [c for c in closed.consts if not jnp.issubdtype(jnp.result_type(c), jnp.inexact)]
    for a in [*indices, *arrays]:
        digest.update(np.ascontiguousarray(a).tobytes() + b"\0")
    return digest.hexdigest()


def jacobian_key(plan, names, *, sparse_output: bool) -> str:
    """:func:`key` of the probe of ``names`` (candidates of the Jacobian ``plan``)."""
    timed = sorted((c for c in plan.candidates if c.name in names), key=lambda c: c.name)
    colorings = [c.coloring for c in timed if c.coloring is not None]
    return key(
        plan.f_flat,
        plan.x_flat,
        "jacobian",
        str(jax.tree.structure(plan.x)),
        str(jax.tree.structure(plan.out)),
        f"sparse_output {sparse_output}",
        *(f"{c.name} {c.jvps} {c.vjps}" for c in timed),
        # The programs read the colors themselves.
        arrays=[a for c in colorings for a in (c.column_colors, c.row_colors)],
        jaxpr=plan.closed,
    )


def kept(digest: str, names) -> dict | None:
    """``name → seconds`` measured by an earlier probe under ``digest``, or ``None``."""
    path = _rates.cache_path(FILE)
    entry = _rates.read_cache(path).get(digest) if path else None
    if not isinstance(entry, dict) or not isinstance(entry.get("seconds"), dict):
        return None
    seconds = entry["seconds"]
    if set(seconds) != set(names):
        return None
    try:
        return {name: float(seconds[name]) for name in names}
    except (TypeError, ValueError):
        return None


def keep(digest: str, seconds: dict) -> None:
    """Keep what the probe measured under ``digest`` (the :data:`KEEP` most recent stay)."""
    path = _rates.cache_path(FILE)
    if path is None:
        return
    entry = {"seconds": dict(seconds), "when": time.time()}

    def change(entries):
        entries = {k: v for k, v in entries.items() if isinstance(v, dict) and k != digest}
        newest = sorted(entries, key=lambda k: entries[k].get("when", 0.0))[-(KEEP - 1) :]
        return {**{k: entries[k] for k in newest}, digest: entry}

    _rates.update_cache(path, change)


def forget_probes() -> int:
    """Forget every probe kept on this machine (``probes.json`` under ``$BPJAX_CACHE_DIR``),
    so the next :func:`~bpjax.modes.jacobian_fn` that needs one measures again; returns how
    many were kept. Nothing to do when ``BPJAX_CACHE_DIR=off``."""
    path = _rates.cache_path(FILE)
    if path is None:
        return 0
    count = len(_rates.read_cache(path))
    _rates.update_cache(path, lambda entries: {})
    return count
