"""Plant one bug at a time in a copy of bpjax and run the default tests for that op.

A planted bug that no test catches is a blind spot of the suite. Run it on a git worktree,
never on your checkout (it edits the rule files and puts them back after each run):

    git worktree add /tmp/planted HEAD
    ln -s "$PWD/.venv" /tmp/planted/.venv
    python tests/scripts/planted_bugs.py /tmp/planted

Each entry is (op, rule file, a line of the rule, the same line with a bug: a dropped factor,
a wrong axis, a missing sum over broadcast axes). When a rule is rewritten its lines change:
an entry whose line is no longer found is reported as NOT FOUND, to be updated.
"""

import pathlib
import subprocess
import sys
import time

root = pathlib.Path(sys.argv[1])
PLANTED = [
    (
        "linear",
        "rules/linear.py",
        "return g @ W.T, x2.T @ g2, g2.sum(axis=0)",
        "return g @ W.T, x2.T @ g2, g2.mean(axis=0)",
    ),
    (
        "linear",
        "rules/linear.py",
        "return g @ W.T, x2.T @ g2, g2.sum(axis=0)",
        "return g @ W.T, 2 * x2.T @ g2, g2.sum(axis=0)",
    ),
    (
        "linear",
        "rules/linear.py",
        "return x @ W + b, tx @ W + x @ tW + tb",
        "return x @ W + b, tx @ W + x @ tW",
    ),
    (
        "matmul",
        "rules/linear.py",
        "return jnp.matmul(a, b), jnp.matmul(ta, b) + jnp.matmul(a, tb)",
        "return jnp.matmul(a, b), jnp.matmul(ta, b)",
    ),
    ("sigmoid", "rules/activations.py", "return (g * a * (1 - a),)", "return (g * a,)"),
    ("sigmoid", "rules/activations.py", "return a, a * (1 - a) * tz", "return a, (1 - a) * tz"),
    ("tanh", "rules/activations.py", "return (g * (1 - a * a),)", "return (g * (1 - a),)"),
    ("tanh", "rules/activations.py", "return a, (1 - a * a) * tz", "return a, (1 - a) * tz"),
    (
        "relu",
        "rules/activations.py",
        "return (jnp.where(_passes(a), g, jnp.zeros_like(g)),)",
        "return (jnp.where(_passes(a), g, 0.01 * g),)",
    ),
    (
        "relu",
        "rules/activations.py",
        "return jnp.logical_not(z <= 0)",
        "return jnp.logical_not(z < 0)",
    ),
    (
        "softmax",
        "rules/softmax.py",
        "return (a * (g - jnp.sum(g * a, axis=axis, keepdims=True)),)",
        "return (a * (g - jnp.sum(g * a, axis=0, keepdims=True)),)",
    ),
    (
        "softmax",
        "rules/softmax.py",
        "return a, a * (tz - jnp.sum(a * tz, axis=axis, keepdims=True))",
        "return a, a * (tz - jnp.sum(a * tz, axis=-1, keepdims=True))",
    ),
    (
        "log_softmax",
        "rules/softmax.py",
        "return (g - jnp.exp(out) * jnp.sum(g, axis=axis, keepdims=True),)",
        "return (g - jnp.exp(out) * jnp.sum(g),)",
    ),
    (
        "log_softmax",
        "rules/softmax.py",
        "return out, tz - jnp.sum(jnp.exp(out) * tz, axis=axis, keepdims=True)",
        "return out, tz - jnp.sum(jnp.exp(out) * tz, axis=-1, keepdims=True)",
    ),
    (
        "softmax_cross_entropy",
        "rules/losses.py",
        "return jnp.exp(logp) * jnp.sum(y, axis=-1, keepdims=True) - y",
        "return jnp.exp(logp) - y",
    ),
    (
        "softmax_cross_entropy",
        "rules/losses.py",
        "d_labels = None if _is_class_ids(labels) else -g * logp / m",
        "d_labels = None if _is_class_ids(labels) else g * logp / m",
    ),
    (
        "softmax_cross_entropy",
        "rules/losses.py",
        "return g * delta / m, d_labels",
        "return g * delta, d_labels",
    ),
    (
        "softmax_cross_entropy",
        "rules/losses.py",
        "t_out = t_out - jnp.sum(logp * tlabels) / m",
        "t_out = t_out - jnp.sum(logp * tlabels)",
    ),
    (
        "cross_entropy",
        "rules/losses.py",
        "d_p = jnp.where(pc > _eps(eps, pc.dtype), -g * y / (m * pc), jnp.zeros_like(pc))",
        "d_p = -g * y / (m * pc)",
    ),
    (
        "cross_entropy",
        "rules/losses.py",
        "d_labels = None if _is_class_ids(labels) else -g * jnp.log(pc) / m",
        "d_labels = None if _is_class_ids(labels) else -g * jnp.log(pc)",
    ),
    (
        "cross_entropy",
        "rules/losses.py",
        "slope = jnp.where(pc > eps, -_targets(labels, p) / pc, jnp.zeros_like(pc))",
        "slope = jnp.where(pc > eps, -_targets(labels, p) * pc, jnp.zeros_like(pc))",
    ),
    ("mse", "rules/losses.py", "d = 2 * g * r / r.size", "d = g * r / r.size"),
    ("mse", "rules/losses.py", "    return d, -d", "    return d, d"),
    (
        "mse",
        "rules/losses.py",
        "return jnp.mean(jnp.square(r)), 2 * jnp.sum(r * (tp - tt)) / r.size",
        "return jnp.mean(jnp.square(r)), 2 * jnp.sum(r * (tp + tt)) / r.size",
    ),
    (
        "matmul",
        "rules/linear.py",
        "return sum_to(da, a2.shape).reshape(a.shape), sum_to(db, b2.shape).reshape(b.shape)",
        # the batch-axis sum dropped: the first batch element's gradient only
        "return da.reshape(-1, *a2.shape[-2:])[0].reshape(a.shape) if da.size != a.size "
        "else da.reshape(a.shape), sum_to(db, b2.shape).reshape(b.shape)",
    ),
]
TESTS = [
    "tests/test_rules.py",
    "tests/test_edge_cases.py",
    "tests/test_bad_input.py",
    "tests/test_manual.py",
    "tests/test_errors.py",
]
out = []
for op, f, a, b in PLANTED:
    p = root / "bpjax" / f
    s = p.read_text()
    if a not in s:
        out.append((op, a[:50], "NOT FOUND"))
        print(out[-1], flush=True)
        continue
    p.write_text(s.replace(a, b, 1))
    t = time.time()
    r = subprocess.run(
        [
            str(root / ".venv/bin/python"),
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "-k",
            op,
            *TESTS,
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    p.write_text(s)
    killed = r.returncode != 0
    line = [l for l in r.stdout.splitlines() if l.startswith("FAILED")][:1]
    out.append((op, b[:70], "killed" if killed else "SURVIVED", f"{time.time() - t:.0f}s", line))
    print(out[-1], flush=True)
print("survivors:", [o for o in out if o[2] != "killed"])
