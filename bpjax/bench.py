"""``bpjax bench``: one MLP training step against the peers and against the GEMM roofline.

Every contender runs the same step on the same data from the same parameters: forward pass of
a ReLU MLP, softmax cross-entropy (batch mean), backward pass, SGD update ``p ← p − lr·g``.

* ``rev``, ``fwd``, ``ref + jax.grad``: :func:`bpjax.models.layers_loss` differentiated by the
  hand-written VJPs, the hand-written JVPs (transposed by JAX) and JAX autodiff;
  ``manual``: :func:`bpjax.manual.backprop` (no autodiff). All ``jax.jit``-compiled with the
  update fused and the parameters donated; ``rev, not donated`` is ``rev`` without donation
  (XLA:CPU copies each donated weight that the backward pass reads, which costs time).
* ``flax nnx``: ``nnx.Linear`` layers, ``nnx.Optimizer(optax.sgd)``, an ``nnx.jit`` step.
* ``torch eager`` (and ``torch.compile`` with ``--compile``) when PyTorch is installed.
* ``numpy manual``: the seed's style, forward cache and δ recursion in NumPy.

The roofline: the rate of one large float32 GEMM measured with JAX on the same device in the
same run; each step's achieved rate is its GEMM FLOPs (forward 2·m·n·k per layer, backward
twice that, the first layer's input gradient skipped) over its median time.

Fairness: gradients are compared with ``ref + jax.grad`` once per size before any timing
(float32 tolerance), contenders are timed in interleaved rounds (median and 10th-90th
percentile) of back-to-back steps after 50 ms of untimed steps (the steady state of a training
loop: thread pools park when idle, see :func:`bpjax.measure.time_steps`), runtimes are kept
apart within a round, compile time is apart, and threads are pinned alike: ``--threads N``
restricts the process to N cores (``sched_setaffinity``, which XLA's thread pool follows) and sets
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` and ``torch.set_num_threads``
to N before those libraries load (the command re-executes itself once to do so).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

GRIDS = {
    "quick": [
        ((4, 8, 3), 100),
        ((784, 256, 10), 128),
        ((784, 512, 512, 10), 256),
        ((1024,) * 9 + (10,), 512),
    ],
    "full": [
        ((4, 8, 3), 100),
        ((784, 256, 10), 128),
        ((784, 512, 512, 10), 256),
        ((784, 1024, 1024, 10), 128),
        ((1024,) * 9 + (10,), 512),
        ((2048,) * 5 + (10,), 1024),
    ],
}
LR = 0.1
REFERENCE = "ref + jax.grad"
UNDONATED = "rev, not donated"
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads(threads: int, argv: list[str]) -> None:
    """Restrict this process to ``threads`` cores and re-execute it with thread variables set.

    Library thread pools size themselves when they load, so the variables must be set before
    NumPy, JAX or PyTorch start; the re-executed process sees them (and inherits the affinity).
    """
    cores = _cores()
    if threads > len(cores):
        raise ValueError(f"--threads {threads}: only {len(cores)} cores are available here")
    if os.environ.get("BPJAX_BENCH_THREADS") == str(threads):
        return
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere only the thread variables apply
        os.sched_setaffinity(0, cores[:threads])
    env = dict(os.environ, BPJAX_BENCH_THREADS=str(threads))
    env.update({var: str(threads) for var in _THREAD_VARS})
    os.execve(sys.executable, [sys.executable, "-m", "bpjax", "bench", *argv], env)


def _cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


# ---------------------------------------------------------------------------------------------
# The problem


def problem(sizes, batch, seed=0):
    """float32 NumPy parameters ``[(W, b), ...]``, inputs ``(batch, sizes[0])`` and labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    params = [
        (
            (rng.standard_normal((d_in, d_out)) * np.sqrt(2.0 / d_in)).astype(np.float32),
            np.zeros(d_out, np.float32),
        )
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch).astype(np.int32)
    return params, x, y


def step_flops(sizes, batch) -> int:
    """GEMM FLOPs of one training step (elementwise work not counted)."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    total = sum(6 * batch * i * o for i, o in pairs)
    return total - 2 * batch * pairs[0][0] * pairs[0][1]  # no gradient for the input


@dataclasses.dataclass
class Contender:
    """One way of taking a training step.

    Attributes:
      name: shown in the table.
      step: ``step()`` takes one step on its own copy of the parameters, returns its output.
      grads: ``grads(x, y)`` → ``[(dW, db), ...]`` as NumPy arrays at the initial parameters.
      compile: seconds spent compiling before timing (0 for eager contenders).
      runtime: whose thread pool runs it (``"jax"``, ``"torch"``, ``"numpy"``); see
        :func:`bpjax.measure.time_steps` for why timing keeps runtimes apart.
    """

    name: str
    step: Callable[[], object]
    grads: Callable[..., list]
    compile: float = 0.0
    runtime: str = "jax"


# ---------------------------------------------------------------------------------------------
# JAX and Flax contenders


def jax_contenders(params, x, y, *, devices: int | None = None) -> list[Contender]:
    """bpjax's contenders; with ``devices``, each step is data parallel over that many devices
    (:mod:`bpjax.parallel`: batch split over a 1-D mesh, parameters replicated)."""
    import jax
    import jax.numpy as jnp

    from bpjax import fwd, manual, measure, models, parallel, ref, rev

    xj, yj = jnp.asarray(x), jnp.asarray(y)
    place = jax.tree.map
    if devices is not None:
        mesh = parallel.mesh(devices)
        xj, yj = parallel.shard_batch((xj, yj), mesh)

        def place(fn, tree):
            return parallel.replicate(jax.tree.map(fn, tree), mesh)

    def autodiff(ops):
        return lambda p, x, y: jax.grad(models.layers_loss)(p, x, y, ops=ops, activation="relu")

    grad_fns = {
        "rev": autodiff(rev),
        "fwd": autodiff(fwd),
        REFERENCE: autodiff(ref),
        "manual": lambda p, x, y: manual.backprop(p, x, y, activation="relu")[1],
    }
    # Donation lets XLA update the parameters in place, but XLA:CPU then copies every weight
    # the backward pass reads (one copy per hidden layer): the undonated variant shows the cost.
    variants = [(name, fn, True) for name, fn in grad_fns.items()]
    variants.append((UNDONATED, grad_fns["rev"], False))
    out = []
    for name, grad_fn, donate in variants:

        def sgd(p, x, y, grad_fn=grad_fn):
            return jax.tree.map(lambda w, g: w - LR * g, p, grad_fn(p, x, y))

        state = [place(jnp.asarray, params)]
        compiled, seconds = measure.compile_fn(
            sgd, state[0], xj, yj, donate_argnums=(0,) if donate else ()
        )

        def step(compiled=compiled, state=state):
            state[0] = compiled(state[0], xj, yj)
            return state[0]

        start = place(jnp.asarray, params)
        grads = functools.partial(_numpy_tree, jax.jit(grad_fn), start)
        out.append(Contender(name, step, grads, seconds))
    return out


def _numpy_tree(fn, *args):
    import numpy as np

    return [tuple(np.asarray(a) for a in layer) for layer in fn(*args)]


def flax_contender(params, x, y) -> Contender:
    import jax.numpy as jnp
    import optax
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, sizes, rngs):
            self.layers = nnx.List(
                [nnx.Linear(i, o, rngs=rngs) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
            )

        def __call__(self, h):
            for layer in self.layers[:-1]:
                h = nnx.relu(layer(h))
            return self.layers[-1](h)

    def build():
        sizes = [params[0][0].shape[0]] + [w.shape[1] for w, _ in params]
        net = Net(sizes, nnx.Rngs(0))
        for layer, (w, b) in zip(net.layers, params, strict=True):
            layer.kernel[...] = jnp.asarray(w)
            layer.bias[...] = jnp.asarray(b)
        return net

    def loss_fn(net, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(net(x), y).mean()

    xj, yj = jnp.asarray(x), jnp.asarray(y)
    net = build()
    optimizer = nnx.Optimizer(net, optax.sgd(LR), wrt=nnx.Param)

    @nnx.jit
    def train_step(net, optimizer, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(net, x, y)
        optimizer.update(net, grads)
        return loss

    start = time.perf_counter()
    train_step(build(), nnx.Optimizer(build(), optax.sgd(LR), wrt=nnx.Param), xj, yj)
    seconds = time.perf_counter() - start

    def grads(x, y):
        g = nnx.grad(loss_fn)(build(), jnp.asarray(x), jnp.asarray(y))
        return [
            (_np(layer["kernel"]), _np(layer["bias"]))
            for _, layer in sorted(g["layers"].items(), key=lambda kv: int(kv[0]))
        ]

    return Contender("flax nnx", lambda: train_step(net, optimizer, xj, yj), grads, seconds)


def _np(variable):
    import numpy as np

    return np.asarray(variable[...] if hasattr(variable, "__getitem__") else variable)


# ---------------------------------------------------------------------------------------------
# PyTorch and NumPy contenders


def torch_contenders(params, x, y, *, compile_too: bool) -> list[Contender]:
    import torch
    import torch.nn.functional as F

    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()

    def fresh():
        return [
            (torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True))
            for w, b in params
        ]

    def loss_of(ps, x, y):
        h = x
        for i, (w, b) in enumerate(ps):
            h = torch.addmm(b, h, w)
            if i < len(ps) - 1:
                h = torch.relu(h)
        return F.cross_entropy(h, y)

    def make(loss_fn, name, seconds=0.0):
        ps = fresh()
        flat = [t for pair in ps for t in pair]

        def step():
            loss = loss_fn(ps, xt, yt)
            loss.backward()
            with torch.no_grad():
                for t in flat:
                    t.sub_(LR * t.grad)
                    t.grad = None
            return None

        def grads(x, y):
            qs = fresh()
            loss_fn(qs, torch.from_numpy(x), torch.from_numpy(y).long()).backward()
            return [(w.grad.numpy(), b.grad.numpy()) for w, b in qs]

        return Contender(name, step, grads, seconds, runtime="torch")

    out = [make(loss_of, "torch eager")]
    if compile_too:
        compiled = torch.compile(loss_of)
        start = time.perf_counter()
        qs = fresh()
        compiled(qs, xt, yt).backward()
        out.append(make(compiled, "torch.compile", time.perf_counter() - start))
    return out


def numpy_contender(params, x, y) -> Contender:
    import numpy as np

    def grads_of(ps, x, y):
        # Forward pass, keeping what the backward pass needs: each layer's input and ReLU mask.
        inputs, masks, h = [], [], x
        for i, (w, b) in enumerate(ps):
            inputs.append(h)
            z = h @ w + b
            if i < len(ps) - 1:
                mask = z > 0
                masks.append(mask)
                h = z * mask
            else:
                h = z
        z = h - h.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1.0
        delta = p / len(y)  # δᴸ = (softmax − onehot) / m
        out = [None] * len(ps)
        for i in range(len(ps) - 1, -1, -1):
            out[i] = (inputs[i].T @ delta, delta.sum(axis=0))
            if i:
                delta = (delta @ ps[i][0].T) * masks[i - 1]
        return out

    ps = [(w.copy(), b.copy()) for w, b in params]

    def step():
        for (w, b), (gw, gb) in zip(ps, grads_of(ps, x, y), strict=True):
            w -= LR * gw
            b -= LR * gb

    return Contender("numpy manual", step, lambda x, y: grads_of(params, x, y), runtime="numpy")


# ---------------------------------------------------------------------------------------------
# Roofline, agreement, the run


def gemm_rate(n: int | None = None, rounds: int = 11) -> dict:
    """FLOP/s of one ``n × n`` float32 matmul under ``jax.jit`` on the default device."""
    import jax
    import jax.numpy as jnp

    from bpjax import measure

    if n is None:
        n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    t = measure.compare({"gemm": (jnp.matmul, (a, b))}, rounds=rounds, warmup=2)["gemm"]
    return {"n": n, "seconds": t.median, "flops_per_second": 2 * n**3 / t.median}


def away_from_kinks(params, x, *, margin: float = 1e-5):
    """Rows of ``x`` whose hidden pre-activations all stay ``margin``·std away from ReLU's kink.

    Computed in float64. At a pre-activation within float32 rounding of 0, summation order
    decides the ReLU mask, so two correct float32 implementations can disagree there; the
    gradient check leaves those rows out rather than loosen its tolerance.
    """
    import numpy as np

    keep = np.ones(len(x), bool)
    h = x.astype(np.float64)
    for w, b in params[:-1]:
        z = h @ w.astype(np.float64) + b
        keep &= np.min(np.abs(z), axis=1) > margin * z.std()
        h = np.maximum(z, 0)
    return keep


def check_agreement(contenders, params, x, y, *, tol: float = 1e-4) -> dict[str, float]:
    """Largest relative gradient difference of each contender from :data:`REFERENCE`.

    Checked on the rows :func:`away_from_kinks`. Raises ``AssertionError`` naming the
    contender when one exceeds ``tol``.
    """
    import numpy as np

    keep = away_from_kinks(params, x)
    if keep.sum() < max(2, len(x) // 4):
        raise AssertionError("too few rows away from ReLU kinks to check gradients; reseed")
    x, y = x[keep], y[keep]
    by_name = {c.name: c for c in contenders}
    want = [a for layer in by_name[REFERENCE].grads(x, y) for a in layer]
    errors = {}
    for c in contenders:
        got = [a for layer in c.grads(x, y) for a in layer]
        err = max(
            float(np.max(np.abs(g - w)) / (np.max(np.abs(w)) + 1e-30))
            for g, w in zip(got, want, strict=True)
        )
        errors[c.name] = err
        if err > tol:
            raise AssertionError(f"{c.name} gradients differ from {REFERENCE} by {err:.2e}")
    return errors


def run(
    grid, *, rounds: int, compile_torch: bool, devices: int | None = None, progress=print
) -> dict:
    """Time every contender at every size; returns the record written to ``peers.json``."""
    from bpjax import measure

    have_torch = importlib.util.find_spec("torch") is not None
    roof = gemm_rate()
    progress(
        f"GEMM roofline: {roof['flops_per_second'] / 1e9:.1f} GFLOP/s ({roof['n']}² float32, JAX)"
    )
    rows, notes = [], []
    if not have_torch:
        notes.append("PyTorch not installed: torch contenders skipped (install the peers extra)")
    for sizes, batch in grid:
        params, x, y = problem(sizes, batch)
        contenders = jax_contenders(params, x, y, devices=devices) + [flax_contender(params, x, y)]
        if have_torch:
            contenders += torch_contenders(params, x, y, compile_too=compile_torch)
        contenders.append(numpy_contender(params, x, y))
        errors = check_agreement(contenders, params, x, y)
        timings = measure.time_steps(
            {c.name: c.step for c in contenders},
            rounds=rounds,
            groups={c.name: c.runtime for c in contenders},
            settle_seconds=0.1,
            rewarm_seconds=0.05,
        )
        label = "-".join(map(str, sizes)) + f" b{batch}"
        flops = step_flops(sizes, batch)
        base = timings[REFERENCE].median
        for c in contenders:
            t = timings[c.name]
            rows.append(
                {
                    "size": label,
                    "sizes": list(sizes),
                    "batch": batch,
                    "contender": c.name,
                    **t.as_dict(),
                    "compile": c.compile,
                    "ratio_to_ref": t.median / base,
                    "step_flops": flops,
                    "achieved_flops_per_second": flops / t.median,
                    "fraction_of_gemm": flops / t.median / roof["flops_per_second"],
                    "max_rel_grad_error": errors[c.name],
                }
            )
        best_peer = min(
            (r for r in rows if r["size"] == label and r["contender"] not in _OURS),
            key=lambda r: r["median"],
        )
        for r in rows:
            if r["size"] == label:
                r["ratio_to_best_peer"] = r["median"] / best_peer["median"]
                r["best_peer"] = best_peer["contender"]
        progress(table([r for r in rows if r["size"] == label]))
    # The roofline is the better of two measurements, before and after the grid, so a slow
    # moment on a shared machine does not inflate every fraction.
    again = gemm_rate()
    roof = {**max(roof, again, key=lambda g: g["flops_per_second"]), "before": roof, "after": again}
    for r in rows:
        r["fraction_of_gemm"] = r["achieved_flops_per_second"] / roof["flops_per_second"]
    progress(
        f"GEMM roofline after the grid: {again['flops_per_second'] / 1e9:.1f} GFLOP/s; "
        f"fractions below use {roof['flops_per_second'] / 1e9:.1f}"
    )
    progress(table(rows))
    return {"gemm": roof, "rows": rows, "notes": notes}


_OURS = ("rev", "fwd", REFERENCE, "manual", UNDONATED)


def table(rows) -> str:
    """A plain-text table of rows from :func:`run`."""
    lines = [
        f"{'size':>30} {'contender':<17} {'median ms':>10} {'p10-p90 ms':>17} "
        f"{'/ ref':>6} {'/ best peer':>11} {'GEMM %':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r['size']:>30} {r['contender']:<17} {r['median'] * 1e3:10.3f} "
            f"{r['p10'] * 1e3:8.3f}-{r['p90'] * 1e3:<8.3f} {r['ratio_to_ref']:6.2f} "
            f"{r.get('ratio_to_best_peer', float('nan')):11.2f} {100 * r['fraction_of_gemm']:6.1f}%"
        )
    return "\n".join(lines)


def ratio_bars(ax, rows, key: str) -> None:
    """Grouped bars of ``row[key]`` per size and contender, 10th-90th percentile as error bars."""
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    names = list(dict.fromkeys(r["contender"] for r in rows))
    width = 0.85 / len(names)
    for i, name in enumerate(names):
        vals = [next(r for r in rows if r["size"] == s and r["contender"] == name) for s in sizes]
        ax.bar(
            [j + i * width for j in range(len(sizes))],
            [v[key] for v in vals],
            width,
            yerr=[
                [(v["median"] - v["p10"]) / v["median"] * v[key] for v in vals],
                [(v["p90"] - v["median"]) / v["median"] * v[key] for v in vals],
            ],
            label=name,
        )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + 0.425 - width / 2 for j in range(len(sizes))], sizes, fontsize=8)


def figure(rows, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ratio_bars(ax, rows, "ratio_to_best_peer")
    ax.set_ylabel("step time / fastest peer (lower is better)")
    ax.set_title(f"MLP training step vs peers ({device})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    from bpjax import results

    results.save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    """``bpjax bench [--quick|--full] [--threads N] [--devices N] [--compile] [--out DIR]
    [--rounds R]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="bpjax bench", description=__doc__.splitlines()[0])
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_true", help="the quick grid (default)")
    profile.add_argument("--full", action="store_true", help="the full grid")
    parser.add_argument("--threads", type=int, default=None, help="cores to pin (default: all)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="bpjax contenders data parallel over N devices (CPU: simulated)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds per size")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)
    threads = args.threads or len(_cores())
    pin_threads(threads, argv)
    import jax

    if args.devices is not None:
        jax.config.update("jax_num_cpu_devices", args.devices)

    from bpjax import results

    name = "full" if args.full else "quick"
    rounds = args.rounds or (31 if args.full else 11)
    start = time.perf_counter()
    print(f"bpjax bench --{name}: {threads} threads, {rounds} rounds per size", flush=True)
    record = run(GRIDS[name], rounds=rounds, compile_torch=args.compile, devices=args.devices)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = record["rows"]
    device = str(jax.devices()[0].device_kind)
    figure(rows, args.out / "peers.png", device)
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    last = sizes[-1]

    def pick(size, contender, key):
        return next(r[key] for r in rows if r["size"] == size and r["contender"] == contender)

    summary = {"device": device, "threads": threads, "devices": args.devices or 1}
    summary["gemm GFLOP/s"] = record["gemm"]["flops_per_second"] / 1e9
    for s in sizes:
        summary[f"rev / ref @ {s}"] = pick(s, "rev", "ratio_to_ref")
        summary[f"manual / ref @ {s}"] = pick(s, "manual", "ratio_to_ref")
        summary[f"rev / best peer @ {s}"] = pick(s, "rev", "ratio_to_best_peer")
    summary[f"rev GEMM fraction @ {last}"] = pick(last, "rev", "fraction_of_gemm")
    summary["seconds"] = time.perf_counter() - start
    results.save(
        "peers",
        out=args.out,
        profile=name,
        seed=0,
        title="MLP training step vs peers and the GEMM roofline (bpjax bench)",
        summary=summary,
        data={
            **record,
            "threads": threads,
            "affinity": _cores(),
            "thread_env": {v: os.environ.get(v) for v in _THREAD_VARS},
            "lr": LR,
        },
        figures=["peers.png"],
        notes=" ".join(record["notes"])
        + " Ratios are medians of interleaved rounds in the same run; error bars 10th-90th "
        "percentile.",
    )
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0
