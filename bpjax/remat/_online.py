"""Online checkpointing: where to keep c states of a loop whose length L is not known in advance.

:func:`~bpjax.remat.while_loop` runs ``x_{i+1} = body(x_i)`` until ``cond`` is false and keeps
at most c states (slot 0 holds x_0). Once step i + 1 has been taken, x_i is known not to be the
last input; it may then be stored, evicting an older checkpoint. When the loop ends, L is known,
x_{L-1} is at hand, and the checkpoints p_0 = 0 < p_1 < ... < p_k ≤ L − 2 cut [0, L − 1) into
segments. Reversing them last to first, segment i can use its own slot and every slot above
it (c − i in all), so revolve (offline-optimal) reverses a segment of n steps with
t(n, c − i) forward steps, and the whole gradient costs

    L − 1 + Σ_i t(n_i, c − i)  forward steps (against the offline optimum t(L, c)),
    2L + Σ_i t(n_i, c − i)     body evaluations (against revolve's t(L, c) + L + 1).

So a placement is as good as the offline schedule at L exactly when its segments are an
optimal first sweep for L. With r = r(L, c) the least r with β(c, r) = C(c + r, c) ≥ L, a
cut is optimal when every segment fits β(c − i, r − 1) steps and no more is spent than the
slopes of t allow; it keeps the *repetition number* (the most times one step is evaluated)
optimal when every segment fits β(c − i, r − 1).

What the papers prove, by range of L:

* L ≤ β(c, 1) = c + 1: storing every state is optimal (no recomputation).
* L ≤ β(c, 2) = (c + 1)(c + 2)/2: Stumm & Walther (2010), Algorithm I, is optimal in total
  recomputations at every L of the range (their Theorem: the online placement equals an
  offline-optimal one). Equinox's checkpointed while loop implements it.
* β(c, 2) < L ≤ β(c, 3): Stumm & Walther's Algorithm II keeps the repetition number optimal
  (r = 3) and the recomputations close to, not equal to, the optimum; no online placement can
  be optimal at every L here, because storing x_{L−2} leaves a last segment of one step while
  another segment is longer than its r − 2 bound (one step of waste each time a state is
  stored).
* all L: Wang, Moin & Iaccarino (2009) keep the repetition number optimal for every L
  (dynamic checkpointing with levels), with total recomputations within r·L.

The rule here (:func:`place`) is a bounded placement in phases. In phase λ (starting at 1)
the segment i may hold at most β(c − i, λ) steps. Each new state is stored whenever some
checkpoint j can be evicted so that the merged segment i = j − 1 still fits its bound; the
earliest such j is evicted (later segments move down one index and gain a slot, so they fit
too). When no eviction fits and not storing would overflow the last segment, the phase
advances (λ + 1): the bounds become β(c − i, λ + 1) = Σ_{s ≤ c − i} β(s, λ), the hockey-stick
identity, and the first segment then absorbs the whole previous phase. Phase λ ends exactly
at L = β(c, λ + 1), with every segment at its bound (the tight revolve cut). Claims, checked
exhaustively in ``tests/test_online_remat.py`` (c ≤ 6, every L to β(c, 4)):

* L ≤ β(c, 2): forward steps equal t(L, c) at every L (the guarantee of Algorithm I);
* all L: the repetition number equals the offline one, r(L, c) (the guarantee of Wang, Moin &
  Iaccarino), so forward steps stay ≤ r(L, c)·(L − 1).

Known inefficiencies:

* For β(c, 2) < L the placement is not Stumm & Walther's Algorithm II: it stores eagerly,
  which keeps the repetition number optimal but wastes more than Algorithm II's few steps
  (worst body evaluations ÷ offline optimum about 1.17 at c = 4 and 1.23 at c = 10, at L
  just past β(c, 2); 1.01 at c = 4, L = 20 000).
* β(s, λ) is kept in int32 and saturates at 2^30; the reversal's revolve split computes
  β(c', r) exactly in uint32, so its plan is optimal for segments up to about 2·10^6 steps.
  A wrong plan never changes a gradient, only how many steps are recomputed.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax

from bpjax import _validate
from bpjax.remat._revolve import beta, optimal_advances, repetitions  # noqa: F401

__all__ = [
    "online_evaluations",
    "offline_evaluations",
    "online_checkpoints",
    "online_advances",
    "repetition_number",
]

# β(s, λ) saturates here: bounds are compared with step counts, which stay below it.
_CAP = 2**30


# ---------------------------------------------------------------------------------------------
# The placement rule, in Python (the reference the tests and the cost model use).


def _first_bounds(checkpoints: int) -> list[int]:
    """β(s, 1) = s + 1 for s = 0..c: the phase-1 bound of a segment with s slots."""
    return [s + 1 for s in range(checkpoints + 1)]


def _next_bounds_py(bounds: list[int]) -> list[int]:
    out, total = [], 0
    for b in bounds:
        total = min(total + b, _CAP)
        out.append(total)
    return out


def _place_py(q: int, positions: list[int], bounds: list[int], c: int):
    """Python twin of :func:`place`: (store, index to evict or append at, new bounds)."""
    if len(positions) < c:
        return True, len(positions), bounds
    gaps = [b - a for a, b in zip(positions, [*positions[1:], q], strict=True)]
    must = q + 1 - positions[-1] > bounds[1]

    def first_fit(bounds):
        for j in range(1, c):
            if gaps[j - 1] + gaps[j] <= bounds[c - j + 1]:
                return j
        return None

    j = first_fit(bounds)
    if j is None and must:
        bounds = _next_bounds_py(bounds)
        j = first_fit(bounds)
    return j is not None, j, bounds


@functools.lru_cache(maxsize=64)
def _trajectory(checkpoints: int, n_steps: int) -> tuple[tuple[int, ...], ...]:
    positions: list[int] = []
    bounds = _first_bounds(checkpoints)
    out = [(), ()]  # after L = 0 and L = 1 steps nothing is stored
    for q in range(n_steps - 1):
        store, j, bounds = _place_py(q, positions, bounds, checkpoints)
        if store:
            positions = positions[:j] + positions[j + 1 :] + [q]
        out.append(tuple(positions))
    return tuple(out)


@functools.lru_cache(maxsize=64)
def placement_table(checkpoints: int, n_steps: int):
    """The forward loop's decisions for q = 0 .. n_steps − 1, precomputed with :func:`_place_py`.

    Returns ``(slots, positions, order, count, bounds)``: ``slots[q]`` the physical slot x_q
    is written to (−1: not stored), then the bookkeeping of :func:`place` after those
    decisions (``positions`` padded with 0 to c entries, ``order`` the physical slot of each
    logical checkpoint), from which the traced rule continues at q = n_steps.
    """
    c = checkpoints
    positions: list[int] = []
    order = list(range(c))
    bounds = _first_bounds(c)
    slots = []
    for q in range(n_steps):
        store, j, bounds = _place_py(q, positions, bounds, c)
        if not store:
            slots.append(-1)
        elif len(positions) < c:  # filling: logical index j == physical slot j
            slots.append(order[j])
            positions.append(q)
        else:  # evict logical j: later checkpoints move down, q is appended
            slot = order[j]
            slots.append(slot)
            positions = positions[:j] + positions[j + 1 :] + [q]
            order = order[:j] + order[j + 1 :] + [slot]
    count = len(positions)
    return tuple(slots), tuple(positions + [0] * (c - count)), tuple(order), count, tuple(bounds)


def online_checkpoints(n_steps: int, checkpoints: int) -> tuple[int, ...]:
    """The stored steps when a loop of ``n_steps`` steps ends, in increasing order.

    Args:
      n_steps: L, the trip count the loop turned out to have.
      checkpoints: c, the number of slots.

    Returns:
      At most c step indices in [0, L − 2] (x_{L−1} is kept apart as the live state).

    Example:
      >>> online_checkpoints(10, 3)  # the tight revolve cut: segments of 4, 3 and 2 steps
      (0, 4, 7)
    """
    _check_counts(n_steps, checkpoints)
    if n_steps < 2:
        return ()
    # Trajectories share prefixes; compute once to a round size so sweeps reuse it.
    size = max(64, 1 << (n_steps - 1).bit_length())
    return _trajectory(checkpoints, size)[n_steps]


def _segments(positions, n_steps: int) -> list[int]:
    cuts = [*positions, n_steps - 1]
    return [b - a for a, b in zip(cuts, cuts[1:], strict=False)]


def online_advances(n_steps: int, checkpoints: int) -> int:
    """Forward steps of one gradient, excluding the last: comparable to t(L, c).

    ``L − 1`` in the forward pass (the L-th evaluation gives the output) plus revolve's
    ``t(n_i, c − i)`` for each segment of :func:`online_checkpoints`.
    """
    _check_counts(n_steps, checkpoints)
    if n_steps < 2:
        return 0
    segments = _segments(online_checkpoints(n_steps, checkpoints), n_steps)
    return n_steps - 1 + sum(optimal_advances(n, checkpoints - i) for i, n in enumerate(segments))


def online_evaluations(n_steps: int, checkpoints: int) -> int:
    """Body evaluations in one gradient through :func:`~bpjax.remat.while_loop`.

    ``L`` in the forward pass, the recomputation, and one per step reversed (its ``jax.vjp``):
    ``online_advances(L, c) + L + 1`` for L ≥ 1 (0 for L = 0).

    Example:
      >>> online_evaluations(10, 3) == offline_evaluations(10, 3)  # optimal to β(c, 2)
      True
    """
    return online_advances(n_steps, checkpoints) + n_steps + 1 if n_steps else 0


def offline_evaluations(n_steps: int, checkpoints: int) -> int:
    """Body evaluations of the offline optimum (revolve knowing L): ``t(L, c) + L + 1``."""
    _check_counts(n_steps, checkpoints)
    return optimal_advances(n_steps, checkpoints) + n_steps + 1 if n_steps else 0


def repetition_number(n_steps: int, checkpoints: int) -> int:
    """The most times any one step is evaluated forward (reversal included, turns not).

    Offline, the least possible is ``repetitions(L, c)``, the least r with β(c, r) ≥ L.
    """
    _check_counts(n_steps, checkpoints)
    if n_steps < 2:
        return n_steps
    segments = _segments(online_checkpoints(n_steps, checkpoints), n_steps)
    return 1 + max(repetitions(n, checkpoints - i) for i, n in enumerate(segments))


def _check_counts(n_steps, checkpoints):
    if not _validate.is_int(n_steps) or n_steps < 0:
        raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
    if not _validate.is_int(checkpoints):
        raise TypeError(f"checkpoints must be an int >= 1, got {checkpoints!r}")
    if checkpoints < 1:
        raise ValueError(f"checkpoints must be an int >= 1, got {checkpoints!r}")


# ---------------------------------------------------------------------------------------------
# The same rule and revolve's split, in jnp integer ops (run inside the loops).


def first_bounds(checkpoints: int) -> jnp.ndarray:
    """β(s, 1) for s = 0..c, int32 ``(c + 1,)``: the phase-1 bounds."""
    return jnp.asarray(_first_bounds(checkpoints), jnp.int32)


def _next_bounds(bounds):
    # β(s, λ+1) = Σ_{u ≤ s} β(u, λ), saturated: an int32 cumsum that would wrap is replaced
    # by the cap wherever the (approximate) float sum says it passed it.
    exact = jnp.cumsum(bounds, dtype=jnp.int32)
    approx = jnp.cumsum(bounds.astype(jnp.float32))
    return jnp.where(approx >= _CAP, _CAP, jnp.minimum(exact, _CAP))


def place(q, positions, count, bounds):
    """Whether to store step q and where, as :func:`_place_py` does, in jnp integer ops.

    Args:
      q: int32 scalar, the step whose state may be stored (known not to be the last input).
      positions: int32 ``(c,)``, the stored steps in increasing order; entries at and after
        ``count`` are unused.
      count: int32 scalar, how many slots are in use.
      bounds: int32 ``(c + 1,)``, β(s, λ) for s = 0..c in the current phase λ.

    Returns:
      ``(store, j, bounds)``: store is a bool scalar; j the logical index evicted (the new
      state is appended after the others), or ``count`` while slots are still free.
    """
    c = positions.shape[0]
    filling = count < c
    if c == 1:
        # One slot holds x_0 for good; the phase only records the repetition number.
        return filling, jnp.int32(0), bounds
    gaps = jnp.diff(jnp.append(positions, q))
    merged = gaps[:-1] + gaps[1:]  # merged[j - 1]: segments j - 1 and j after evicting j
    slots = c - jnp.arange(c - 1)  # segment j - 1 then has c - j + 1 slots
    must = q + 1 - positions[c - 1] > bounds[1]
    fits = merged <= bounds[slots]
    stuck = ~fits.any() & must & ~filling
    bounds = jnp.where(stuck, _next_bounds(bounds), bounds)
    fits = merged <= bounds[slots]
    store = filling | fits.any()
    j = jnp.where(filling, count, jnp.argmax(fits) + 1).astype(jnp.int32)
    return store, j, bounds


def split(n, slots):
    """Revolve's first checkpoint offset for n steps with ``slots`` ≥ 2 slots (jnp scalars).

    ``m = max(1, β(c, r − 2), n − β(c − 1, r))`` with r the least integer with β(c, r) ≥ n,
    as :func:`~bpjax.remat.revolve` chooses it: the head [0, m) is then reversed with c slots
    and r − 1 advances per step, the tail with c − 1 slots and r, for t(n, c) in all.
    """
    c = slots.astype(jnp.uint32)
    n = n.astype(jnp.uint32)

    # β(c, r) for r = 0, 1, ... by β(c, r) = β(c, r - 1)·(c + r)/r (exact in integers);
    # keep the last three, since β(c - 1, r) = β(c, r) - β(c, r - 1) (Pascal).
    def grow(state):
        r, b2, b1, b0 = state
        r = r + 1
        return r, b1, b0, b0 * (c + r) // r

    def short(state):
        return state[3] < n

    zero, one = jnp.uint32(0), jnp.uint32(1)
    _, b_r2, b_r1, b_r = lax.while_loop(short, grow, (zero, zero, zero, one))
    m = jnp.maximum(jnp.maximum(one, b_r2), jnp.where(n > b_r - b_r1, n - (b_r - b_r1), zero))
    return m.astype(jnp.int32)
