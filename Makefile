# Everything a fresh machine needs, from Python 3.10+ and make alone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The extras `make test` and `make reproduce` install; add `peers` for the PyTorch cross-checks
# (`make test EXTRAS=test,experiments,lint,peers`).
EXTRAS ?= test,experiments,lint
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: venv test test-slow reproduce accelerator bench lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# -rs lists every skipped test with its reason, so a missing peer is visible, not silent.
test: venv
	$(PY) -m pytest -q -rs

# Tests marked `slow` (long training runs, large sweeps); not part of `make test`.
test-slow: venv
	HYPOTHESIS_PROFILE=bpjax-slow $(PY) -m pytest -q -rs -m slow

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

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
