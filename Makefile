# Everything a fresh machine needs, from Python 3.11+ and make alone.
# `make test PYTHON=python3.13` (or a path) tests another interpreter in its own venv,
# .venv-3.13; constraints.txt picks the JAX release for that Python by environment markers.
PYTHON ?= python3
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(origin PYTHON),file)
VENV ?= .venv
else
VENV ?= .venv-$(PYVER)
endif
PY := $(VENV)/bin/python
# The extras `make test` and `make reproduce` install; add `peers` for the PyTorch cross-checks
# (`make test EXTRAS=test,experiments,lint,peers`).
EXTRAS ?= test,experiments,lint
# The extras `make docs` installs: the site's tools, and what the tutorials import (matplotlib,
# scikit-learn's digits).
DOCS_EXTRAS ?= docs,experiments
comma := ,
# One stamp per set of extras (commas become dashes): a venv made for the tests gains the docs
# packages on the first `make docs`, and the other way round.
stamp = $(VENV)/.installed-$(subst $(comma),-,$(1))
STAMP := $(call stamp,$(EXTRAS))
DOCS_STAMP := $(call stamp,$(DOCS_EXTRAS))

.PHONY: venv test test-slow reproduce accelerator bench lint format docs docs-serve clean

venv: $(STAMP)

$(VENV)/.installed-%: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "bpjax needs Python 3.11 or newer; '$(PYTHON)' is $(if $(PYVER),Python $(PYVER),not a working interpreter)."; \
		echo "JAX dropped Python 3.10 after 0.6.2, six minor releases behind the pins here."; \
		echo "Run make with PYTHON=python3.11 (or 3.12, 3.13)."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(subst -,$(comma),$*)]"
	touch $@

# -rs lists every skipped test with its reason, so a missing peer is visible, not silent.
# The tests run in parallel, one worker per core (pytest-xdist); `make test WORKERS=0` runs
# them in this process (for pdb).
WORKERS ?= auto
test: venv
	$(PY) -m pytest -q -rs -n $(WORKERS)

# Tests marked `slow` (long training runs, large sweeps, every experiment's quick profile);
# not part of `make test`. In parallel too (23 min with two workers on this 2-core VM).
test-slow: venv
	HYPOTHESIS_PROFILE=bpjax-slow $(PY) -m pytest -q -rs -n $(WORKERS) -m slow

reproduce: venv
	@set -e; for script in experiments/*.py; do \
		echo "== $$script (quick profile)"; \
		$(PY) $$script --out results; \
	done
	$(PY) -m bpjax.report results

# Mode cost, remat and bench on the device JAX finds (GPU/TPU: ~5 min; CPU: a small profile),
# results in results/<backend>/. Install the accelerator's jax build first (see the README).
accelerator: venv
	bash experiments/accelerator_run.sh

# `make bench ARGS="--full --compile"` passes options through.
bench: venv
	$(VENV)/bin/bpjax bench $(ARGS)

# The site in site/, strict: a broken link, a missing API entry, a docstring griffe cannot
# parse or a tutorial cell that raises fails the build. Tutorials run in a Jupyter kernel of
# this venv; PYTHONPATH makes it import this checkout's bpjax (a git worktree included).
docs: $(DOCS_STAMP)
	PYTHONPATH=$(CURDIR) NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# http://127.0.0.1:8000, rebuilt on save (tutorials execute on every rebuild).
docs-serve: $(DOCS_STAMP)
	PYTHONPATH=$(CURDIR) NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info site
