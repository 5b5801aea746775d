"""``peers.png``: step time over the fastest peer per size, with each size's verdict and
break-even written under its bars."""

from __future__ import annotations

from pathlib import Path

from bpjax.bench._problem import HEADLINE


def ratio_bars(ax, rows, key: str, *, ymax: float | None = None) -> None:
    """Grouped bars of ``row[key]`` per size and contender, 10th-90th percentile as error bars.

    With ``ymax``, the axis stops there and a bar above it is written as its value on top.
    """
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    names = list(dict.fromkeys(r["contender"] for r in rows))
    width = 0.85 / len(names)
    for i, name in enumerate(names):
        vals = [next(r for r in rows if r["size"] == s and r["contender"] == name) for s in sizes]
        xs = [j + i * width for j in range(len(sizes))]
        heights = [v[key] for v in vals]
        ax.bar(
            xs,
            heights,
            width,
            yerr=[
                [(v["median"] - v["p10"]) / v["median"] * v[key] for v in vals],
                [(v["p90"] - v["median"]) / v["median"] * v[key] for v in vals],
            ],
            label=name,
        )
        for x, h in zip(xs, heights, strict=True):
            if ymax is not None and h > ymax:
                ax.text(
                    x, 0.98 * ymax, f"{h:.1f}", rotation=90, ha="center", va="top", fontsize=6,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
                )  # fmt: skip
    ax.axhline(1.0, color="k", lw=0.8)
    if ymax is not None:
        ax.set_ylim(0, ymax)
    ax.set_xticks([j + 0.425 - width / 2 for j in range(len(sizes))], sizes, fontsize=8)


def size_caption(size: str, rows, verdict) -> str:
    """Tick label: the size, then rev's verdict against the best peer and its break-even."""
    lines = [size]
    if verdict is not None:
        lo, hi = verdict["ci"]
        lines.append(f"{verdict['verdict']} ({lo:.2f}-{hi:.2f})")
        best = next(r for r in rows if r["size"] == size and r["contender"] == verdict["best_peer"])
        after = best.get("rev_ahead_after_steps")
        lines.append(f"vs {verdict['best_peer']}:")
        lines.append("never ahead" if after is None else f"ahead from step {after}")
    return "\n".join(lines)


def draw(record: dict, device: str):
    """The figure of :func:`figure`, returned (a matplotlib ``Figure``) rather than saved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in record["rows"] if "ratio_to_best_peer" in r]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.9 * len(sizes)), 5.2))
    ratio_bars(ax, rows, "ratio_to_best_peer", ymax=2.0)
    labels = [size_caption(s, rows, record["rankings"].get(s)) for s in sizes]
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("step time / fastest peer (lower is better; bars above 2 are labelled)")
    ax.set_title(
        f"MLP training step vs peers ({device}); under each size: {HEADLINE} vs the best peer"
    )
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return fig


def figure(record: dict, path: Path, device: str) -> None:
    """Bars of every contender's step time over the fastest peer's, one group per size.

    Under each group: rev's verdict with the 95% bootstrap interval of its ratio to the best
    peer, and the number of steps (first call included) after which rev is ahead of it.
    Staged with :func:`bpjax.results.save_figure` (written when the record is saved).
    """
    import matplotlib.pyplot as plt

    from bpjax import results

    fig = draw(record, device)
    results.save_figure(fig, path, dpi=120)
    plt.close(fig)
