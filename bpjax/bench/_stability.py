"""Is a ranking resolved? A paired bootstrap over interleaved timing rounds.

Rounds interleave the contenders, so round ``r`` of every contender ran under nearly the same
conditions (the same neighbours on a shared machine, the same clock). The per-round ratio
``ours_r / peer_r`` cancels what a round's conditions did to both, which a ratio of separate
medians does not. The statistic is the median of those per-round ratios against the best peer
(the peer with the lowest median); resampling rounds with replacement gives its bootstrap
distribution, whose central interval decides the verdict:

* ``"ahead"``: the whole interval is below 1; ``"behind"``: the whole interval is above 1;
* ``"tie"``: the interval straddles 1 but lies within ``1 ± tie`` (contenders closer than
  that may swap places from run to run, and we say so);
* ``"unresolved"``: anything else, or fewer than ``min_rounds`` rounds (a bootstrap over a
  handful of rounds says little); more rounds are needed.
"""

from __future__ import annotations

import time

VERDICTS = ("ahead", "behind", "tie", "unresolved")


def ranking(
    samples: dict[str, list[float]],
    ours: str,
    peers: list[str],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    tie: float = 0.03,
    min_rounds: int = 5,
    seed: int = 0,
) -> dict:
    """Bootstrap verdict on ``ours`` against the fastest of ``peers``.

    Args:
      samples: name → per-round seconds, all the same length (from
        :func:`bpjax.measure.run_rounds`).
      ours: the contender the verdict is about.
      peers: the contenders it is compared with (the best one by median).
      resamples: bootstrap resamples of the rounds.
      level: the coverage of the bootstrap's central interval.
      tie: half-width of the band around 1 within which a straddling interval is a tie.
      min_rounds: below this many rounds the verdict is ``"unresolved"``.
      seed: seeds the resampling, so a verdict is reproducible from its samples.

    Returns:
      ``{"ratio", "ci": [lo, hi], "best_peer", "win_fraction", "rounds", "verdict"}``:
      ``ratio`` is the median per-round ratio of ours to the best peer; ``win_fraction`` is the
      fraction of rounds in which ours beat that peer in the same round.
    """
    import numpy as np

    medians = {p: float(np.median(samples[p])) for p in peers}
    best = min(peers, key=medians.get)
    ratios = np.asarray(samples[ours], dtype=float) / np.asarray(samples[best], dtype=float)
    rounds = len(ratios)
    rng = np.random.default_rng(seed)
    boot = np.median(ratios[rng.integers(0, rounds, size=(resamples, rounds))], axis=1)
    lo, hi = (float(q) for q in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    if rounds < min_rounds:
        verdict = "unresolved"
    elif hi < 1:
        verdict = "ahead"
    elif lo > 1:
        verdict = "behind"
    elif lo >= 1 - tie and hi <= 1 + tie:
        verdict = "tie"
    else:
        verdict = "unresolved"
    return {
        "ratio": float(np.median(ratios)),
        "ci": [lo, hi],
        "best_peer": best,
        "win_fraction": float(np.mean(ratios < 1)),
        "rounds": rounds,
        "verdict": verdict,
    }


def per_round(verdict: dict) -> str:
    """A :func:`ranking` result in words, as the records' summaries write it:
    ``"per round (paired, 21 rounds, 95% bootstrap 0.99-1.00): tie"``."""
    lo, hi = verdict["ci"]
    return (
        f"per round (paired, {verdict['rounds']} rounds, 95% bootstrap {lo:.2f}-{hi:.2f}): "
        f"{verdict['verdict']}"
    )


def rounds_until_resolved(
    steps: dict, calls: dict, judge, *, rounds: int, budget: float, max_rounds: int, **options
):
    """Interleaved rounds (:func:`bpjax.measure.run_rounds`): ``rounds`` first, then half as
    many again (at least 2) while ``judge`` says the question is open, until ``max_rounds``
    rounds or ``budget`` seconds.

    Args:
      steps, calls: as for :func:`~bpjax.measure.run_rounds`; ``options`` are passed to it.
      judge: ``judge(samples) -> (verdicts, resolved)``, called after every batch.

    Returns:
      ``(samples, verdicts)``: per-round seconds by name, and the last ``judge`` verdicts.
    """
    from bpjax import measure

    samples = {name: [] for name in steps}
    start, batch, done, verdicts = time.perf_counter(), rounds, 0, None
    while batch > 0:
        more = measure.run_rounds(steps, calls, rounds=batch, first_round=done, **options)
        for name, s in more.items():
            samples[name] += s
        done += batch
        verdicts, resolved = judge(samples)
        if resolved or time.perf_counter() - start >= budget:
            break
        batch = min(max(2, rounds // 2), max_rounds - done)
    return samples, verdicts
