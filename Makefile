# The two promises of the README:
#   make plan  - set up and run the offline plan of the dev stack (Pulumi's mock engine, no cloud)
#   make test  - set up and run every test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STACK  ?= dev
BUILD  := build
# Tools the tests run besides the venv's packages (promtool, checkov in .venv-checkov); not plan's.
TOOLS  := .stamps/tools

.PHONY: plan plan-prod test tools lint docs clean help

help:
	@echo "make plan [STACK=dev]  offline plan: resource tree, $(BUILD)/plan-<stack>.json, manifests"
	@echo "make test              install test dependencies and tools (scripts/ensure-tools.sh), run pytest"
	@echo "make tools             install promtool (apt), checkov (.venv-checkov), CRD schemas (npm) if missing"
	@echo "make docs              rewrite README's config reference and Pulumi.yaml's config block"
	@echo "make bench [BENCH_ARGS=\"--runs 3\"]  wall time and peak RSS of the plans vs the SDK-import floor"
	@echo "make clean             remove the virtualenvs, tool stamp and build output"

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt requirements-nodeps.txt model_tools/requirements.txt model_tools/requirements-nodeps.txt
	$(PIP) install --quiet --disable-pip-version-check -r requirements-test.txt
	$(PIP) install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $@

# The model tooling (TensorFlow, tensorflow-serving-api) for `model_tools publish/smoke` outside the tests.
$(VENV)/.models: $(VENV)/.runtime model_tools/requirements.txt model_tools/requirements-nodeps.txt
	$(PIP) install --quiet --disable-pip-version-check -r model_tools/requirements.txt
	$(PIP) install --quiet --disable-pip-version-check --no-deps -r model_tools/requirements-nodeps.txt
	touch $@

$(TOOLS): scripts/ensure-tools.sh requirements-checkov.txt tests/crd_validator/package-lock.json
	PYTHON=$(PYTHON) bash scripts/ensure-tools.sh
	@mkdir -p $(@D)
	touch $@

tools: $(TOOLS)

plan: $(VENV)/.runtime
	$(PY) -m stacks plan --stack $(STACK) --json $(BUILD)/plan-$(STACK).json --manifests $(BUILD)/manifests-$(STACK)

plan-prod:
	$(MAKE) plan STACK=prod

test: $(VENV)/.test $(TOOLS)
	$(PY) -m pytest

docs: $(VENV)/.runtime
	$(PY) -c "from pathlib import Path; from stacks.reference import write_docs; print(*write_docs(Path('.')))"

# Wall time and peak RSS of the offline plans (dev, prod, gke-dev, generated N-model stacks) against
# a process that only imports the SDKs; PASS/FAIL against the targets in bench/README.md.
.PHONY: bench
bench: $(VENV)/.runtime
	$(PY) -m bench.plan_bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-checkov .stamps $(BUILD) .pytest_cache tests/crd_validator/node_modules
