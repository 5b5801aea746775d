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

The rule here (:func:`_place_py`; :class:`_Placer` runs it in O(1) amortized work per step)
is a bounded placement in phases. In phase λ (starting at 1) the segment i may hold at most
β(c − i, λ) steps. Each new state is stored whenever some
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

from bpjax.remat._revolve import beta, check_counts, optimal_advances, repetitions  # noqa: F401

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
    """The rule, step by step (the reference): (store, index to evict or append at, bounds)."""
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


class _Placer:
    """The rule of :func:`_place_py`, one step at a time, in O(1) amortized work per step.

    Two facts make the earliest fitting eviction cheap to find. Within a phase, an eviction
    that fails at logical index i keeps failing: a store at j ≥ i leaves the checkpoints
    before j in place and only lengthens segment j − 1, a skipped step only lengthens the last
    segment, and bounds change only with the phase. So the search resumes where it stopped
    (``ptr``: the slots at logical i − 1 and i, and i) and restarts from 1 only when the phase
    advances: each index is passed at most once per phase. And the checkpoints are kept as a
    singly linked list of physical slots in step order (``nxt``), so an eviction unlinks one
    slot and appends it as the tail instead of shifting c entries.
    :func:`~bpjax.remat._while_forward.forward` runs the same steps in jnp.
    """

    def __init__(self, checkpoints: int):
        c = checkpoints
        self.c = c
        self.nxt = [-1] * c  # the next slot in step order; -1 after the tail
        self.steps = [-1] * c  # the step stored in each slot
        self.tail = -1
        self.count = 0
        self.bounds = _first_bounds(c)
        self.ptr = (0, 1, 1)  # once full: slots at logical i − 1 and i, and i

    def offer(self, q: int) -> int:
        """The slot x_q is stored in (−1: not stored), once x_{q+1} shows q is not last."""
        c, nxt = self.c, self.nxt
        if self.count < c:  # filling: slot k holds the k-th stored step
            slot = self.count
            if self.tail >= 0:
                nxt[self.tail] = slot
            self.tail, self.count = slot, self.count + 1
            self.steps[slot] = q
            return slot
        if c == 1:
            return -1
        must = q + 1 - self.steps[self.tail] > self.bounds[1]
        prev, node, i = self._scan(q, *self.ptr)
        if i == c and must:  # nothing fits and the last segment would overflow
            self.bounds = _next_bounds_py(self.bounds)
            prev, node, i = self._scan(q, 0, nxt[0], 1)
        if i == c:
            self.ptr = (prev, node, i)
            return -1
        if node == self.tail:  # evicting the last checkpoint: q takes its slot in place
            self.ptr = (prev, node, i)
        else:
            after = nxt[node]
            nxt[prev], nxt[self.tail], nxt[node] = after, node, -1
            self.tail = node
            self.ptr = (prev, after, i)
        self.steps[node] = q
        return node

    def _scan(self, q, prev, node, i):
        """The earliest fitting eviction at logical index ≥ i, as ``(prev, node, i)``;
        ``i == c`` if none."""
        c, nxt, steps, bounds = self.c, self.nxt, self.steps, self.bounds
        while i < c:
            after = q if node == self.tail else steps[nxt[node]]
            if after - steps[prev] <= bounds[c - i + 1]:  # segments i − 1 and i merged fit
                break
            prev, node, i = node, nxt[node], i + 1
        return prev, node, i

    def positions(self) -> tuple[int, ...]:
        """The stored steps in increasing order."""
        out, slot = [], 0 if self.count else -1
        while slot >= 0:
            out.append(self.steps[slot])
            slot = self.nxt[slot]
        return tuple(out)


@functools.lru_cache(maxsize=64)
def placement_table(checkpoints: int, n_steps: int):
    """The forward loop's decisions for q = 0 .. n_steps − 1, precomputed by :class:`_Placer`.

    Returns ``(slots, nxt, tail, count, bounds)``: ``slots[q]`` the physical slot x_q is
    written to (−1: not stored), then the placer's list and phase after those decisions, from
    which the traced rule continues at q = n_steps (its search restarts at logical index 1,
    which finds the same eviction).
    """
    placer = _Placer(checkpoints)
    slots = tuple(placer.offer(q) for q in range(n_steps))
    return slots, tuple(placer.nxt), placer.tail, placer.count, tuple(placer.bounds)


@functools.lru_cache(maxsize=256)
def _positions(checkpoints: int, n_steps: int) -> tuple[int, ...]:
    placer = _Placer(checkpoints)
    for q in range(n_steps - 1):
        placer.offer(q)
    return placer.positions()


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
    check_counts("online_checkpoints", n_steps, checkpoints)
    return _positions(checkpoints, n_steps) if n_steps >= 2 else ()


def _segments(positions, n_steps: int) -> list[int]:
    cuts = [*positions, n_steps - 1]
    return [b - a for a, b in zip(cuts, cuts[1:], strict=False)]


def online_advances(n_steps: int, checkpoints: int) -> int:
    """Forward steps of one gradient, excluding the last: comparable to t(L, c).

    ``L − 1`` in the forward pass (the L-th evaluation gives the output) plus revolve's
    ``t(n_i, c − i)`` for each segment of :func:`online_checkpoints`.
    """
    check_counts("online_advances", n_steps, checkpoints)
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
    check_counts("offline_evaluations", n_steps, checkpoints)
    return optimal_advances(n_steps, checkpoints) + n_steps + 1 if n_steps else 0


def repetition_number(n_steps: int, checkpoints: int) -> int:
    """The most times any one step is evaluated forward (reversal included, turns not).

    Offline, the least possible is ``repetitions(L, c)``, the least r with β(c, r) ≥ L.
    """
    check_counts("repetition_number", n_steps, checkpoints)
    if n_steps < 2:
        return n_steps
    segments = _segments(online_checkpoints(n_steps, checkpoints), n_steps)
    return 1 + max(repetitions(n, checkpoints - i) for i, n in enumerate(segments))


# ---------------------------------------------------------------------------------------------
# The same rule and revolve's split, in jnp integer ops (run inside the loops).


def next_bounds(bounds):
    """The next phase's bounds in jnp (int32 ``(c + 1,)``), as :func:`_next_bounds_py`."""
    # β(s, λ+1) = Σ_{u ≤ s} β(u, λ), saturated: an int32 cumsum that would wrap is replaced
    # by the cap wherever the (approximate) float sum says it passed it.
    exact = jnp.cumsum(bounds, dtype=jnp.int32)
    approx = jnp.cumsum(bounds.astype(jnp.float32))
    return jnp.where(approx >= _CAP, _CAP, jnp.minimum(exact, _CAP))


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
