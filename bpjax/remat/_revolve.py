"""Revolve: the binomial checkpointing schedule (Griewank 1992; Griewank & Walther 2000).

Reversing L steps ``x_{i+1} = f_i(x_i)`` with c stored states (slot 0 holds the input) so that
no step is advanced more than r times is possible exactly when L ≤ β(c, r) = C(c + r, c). The
least forward steps any such schedule needs is

    t(L, c) = r·L − β(c + 1, r − 1),   r the least integer with β(c, r) ≥ L,

and ``t(L, 1) = L(L − 1)/2``. :func:`revolve` produces a schedule that attains it; the backward
pass of :class:`~bpjax.remat.Binomial` interprets it (:func:`program` turns it into int32 rows).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from bpjax import _validate


def check_counts(name: str, n_steps, checkpoints) -> None:
    """Refuse counts the schedules cannot mean, naming ``name``: n_steps an int >= 0,
    checkpoints an int >= 1 (0 made :func:`repetitions` loop forever: β(0, r) = 1)."""
    if not _validate.is_int(n_steps) or n_steps < 0:
        raise ValueError(f"{name}: n_steps must be an int >= 0 (steps to reverse), got {n_steps!r}")
    message = f"{name}: checkpoints must be an int >= 1 (slot 0 holds the input), got "
    if not _validate.is_int(checkpoints):
        raise TypeError(message + repr(checkpoints))
    if checkpoints < 1:
        raise ValueError(message + repr(checkpoints))


def beta(c: int, r: int) -> int:
    """β(c, r) = C(c + r, c): steps reversible with c checkpoints, each advanced at most r times."""
    return math.comb(c + r, c) if r >= 0 else 0


def repetitions(n_steps: int, checkpoints: int) -> int:
    """The least r with β(c, r) ≥ L: how often the most-advanced step is advanced."""
    check_counts("repetitions", n_steps, checkpoints)
    r = 0
    while beta(checkpoints, r) < n_steps:
        r += 1
    return r


def optimal_advances(n_steps: int, checkpoints: int) -> int:
    """Griewank's minimum number of forward steps to reverse L steps with c checkpoints.

    ``t(L, c) = r·L − β(c + 1, r − 1)`` with r = :func:`repetitions`; the forward step inside each
    turn (one layer's VJP) is not counted. ``t(L, 1) = L(L − 1)/2``.
    """
    check_counts("optimal_advances", n_steps, checkpoints)
    if n_steps <= 1:
        return 0
    r = repetitions(n_steps, checkpoints)
    return r * n_steps - beta(checkpoints + 1, r - 1)


def revolve(n_steps: int, checkpoints: int) -> list[tuple]:
    """Revolve's schedule for L steps and c slots (slot 0 holds the input), as a list of events.

    Events: ``("restore", slot)``, ``("advance", from, to)``, ``("store", slot)``, ``("turn", i)``
    (the VJP of step i from its input state). The split of a segment of n steps with c slots puts
    the next checkpoint m steps in, with ``max(β(c, r−2), n − β(c−1, r)) ≤ m ≤ min(β(c, r−1),
    n − β(c−1, r−1))`` (the least such m is taken): the head is then reversible with c slots and
    r−1 further advances, the tail with c−1 slots and r, and the total equals t(n, c).
    """
    check_counts("revolve", n_steps, checkpoints)
    events: list[tuple] = []
    state = {"pos": 0}  # the position of the live state, or None after a turn consumed it

    def restore(slot, start):
        if state["pos"] != start:
            events.append(("restore", slot))
            state["pos"] = start

    def advance(to):
        if to > state["pos"]:
            events.append(("advance", state["pos"], to))
            state["pos"] = to

    def turn(i):
        events.append(("turn", i))
        state["pos"] = None

    # Iterative, so deep schedules do not hit Python's recursion limit.
    stack = [(0, n_steps, checkpoints, 0)]
    while stack:
        start, n, c, slot = stack.pop()
        if n == 1:
            restore(slot, start)
            turn(start)
        elif c == 1:
            for i in reversed(range(n)):
                restore(slot, start)
                advance(start + i)
                turn(start + i)
        else:
            r = repetitions(n, c)
            m = max(1, beta(c, r - 2), n - beta(c - 1, r))
            restore(slot, start)
            advance(start + m)
            events.append(("store", slot + 1))
            # Reverse the tail first (c - 1 slots above this one), then the head with all c.
            stack.append((start, m, c, slot))
            stack.append((start + m, n - m, c - 1, slot + 1))
    return events


def schedule_advances(events) -> int:
    """Forward steps a schedule advances (turns not counted), to compare with ``t(L, c)``."""
    return sum(e[2] - e[1] for e in events if e[0] == "advance")


def program(events) -> np.ndarray:
    """Events as int32 rows ``(restore_slot, advance_to, store_slot, turn)``, -1 for "none".

    Consecutive events fold into one row in that order, so each row does at most one of each.
    """
    rows = []
    row = [-1, -1, -1, 0]
    order = {"restore": 0, "advance": 1, "store": 2, "turn": 3}
    last = -1
    for event in events:
        kind = order[event[0]]
        if kind <= last:
            rows.append(row)
            row = [-1, -1, -1, 0]
        if kind == 0:
            row[0] = event[1]
        elif kind == 1:
            row[1] = event[2]
        elif kind == 2:
            row[2] = event[1]
        else:
            row[3] = 1
        last = kind
        if kind == 3:
            rows.append(row)
            row = [-1, -1, -1, 0]
            last = -1
    if row != [-1, -1, -1, 0]:
        rows.append(row)
    return np.asarray(rows, dtype=np.int32).reshape(-1, 4)


@functools.lru_cache(maxsize=256)
def split_program(n_steps: int, checkpoints: int) -> tuple[bytes, bytes]:
    """:func:`program` of the schedule, split at its first turn, as hashable int32 bytes.

    The first part is what the forward pass runs: one sweep to the last state, storing the
    checkpoints on the way; the second part is the backward pass.
    """
    events = revolve(n_steps, checkpoints)
    first_turn = next(i for i, e in enumerate(events) if e[0] == "turn")
    return program(events[:first_turn]).tobytes(), program(events[first_turn:]).tobytes()
