# The two promises of the README:
#   make plan  - set up and run the offline plan of the dev stack (Pulumi's mock engine, no cloud)
#   make test  - set up and run every test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STACK  ?= dev
BUILD  := build
# Tools the tests run besides the venv's packages (promtool, checkov in .venv-checkov, trivy in
# .venv-trivy); not plan's.
TOOLS  := .stamps/tools

.PHONY: plan plan-prod test tools lint docs clean help

help:
	@echo "make plan [STACK=dev]  offline plan: resource tree, $(BUILD)/plan-<stack>.json, manifests"
	@echo "make test              install test dependencies and tools (scripts/ensure-tools.sh), run pytest"
	@echo "make tools             install promtool (apt), checkov (.venv-checkov), trivy (.venv-trivy), CRD schemas (npm) if missing"
	@echo "make models            install the model tooling (python -m model_tools: TensorFlow, boto3, GCS client)"
	@echo "make ship-offline      ship a model offline: export, publish to a local S3, sync, serve, smoke, promote"
	@echo "make mutate MODULE=path [MUTATE_ARGS=...]  mutation run (mutmut) over modules/folders: score and survivors (docs/testing.md)"
	@echo "make docs              regenerate docs/configuration.md's tables and Pulumi.yaml's config block"
	@echo "make bench [BENCH_ARGS=\"--runs 3\"]  wall time and peak RSS of the plans vs importing the SDK modules they load"
	@echo "make bench-cold-start  scale-up estimate and monthly cost of dev, prod, gke-dev with the cold-start settings off and on"
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

# The offline ship path's test servers on top of the model tooling (moto's S3 over HTTP, the AWS CLI).
$(VENV)/.ship: $(VENV)/.models model_tools/requirements-ship.txt
	$(PIP) install --quiet --disable-pip-version-check -r model_tools/requirements-ship.txt
	touch $@

$(TOOLS): scripts/ensure-tools.sh requirements-checkov.txt requirements-trivy.txt tests/crd_validator/package-lock.json
	PYTHON=$(PYTHON) bash scripts/ensure-tools.sh
	@mkdir -p $(@D)
	touch $@

tools: $(TOOLS)

plan: $(VENV)/.runtime
	$(PY) -m stacks plan --stack $(STACK) --json $(BUILD)/plan-$(STACK).json --manifests $(BUILD)/manifests-$(STACK)

plan-prod:
	$(MAKE) plan STACK=prod

# `python -m model_tools` for real buckets and endpoints (the README's "Ship a model").
.PHONY: models ship-offline
models: $(VENV)/.models
	@echo "model tooling installed: $(PY) -m model_tools --help"

# The whole "Ship a model" path with nothing but this machine: a real export, publish to moto's S3
# server, the serving sync script with the real AWS CLI, TF Serving's startup rules and a stand-in
# serving the synced files, smoke, promote; each step a `python -m model_tools` process.
ship-offline: $(VENV)/.ship
	$(PY) -m pytest -p no:cacheprovider -q tests/model_tools/test_model_ship_end_to_end.py
	@echo "shipped offline: export, inspect, publish (v1, v2), list, promote stable -> 2, sync with the AWS CLI,"
	@echo "TF Serving's startup on the synced files, smoke (5 REST predicts): all passed"

# Up to 4 worker processes (pytest-xdist): each plans the stacks it needs once, as the serial run does.
# No gRPC fork handlers in the workers (tests/conftest.py says why; set here too, before any import).
test: $(VENV)/.test $(TOOLS)
	GRPC_ENABLE_FORK_SUPPORT=false $(PY) -m pytest --numprocesses=auto --maxprocesses=4

# Mutation testing (scripts/mutate.py, docs/testing.md): not part of `make test`. MODULE is one or more
# module paths or package folders; the default is the whole of components/ and stacks/ (hours: CI runs it
# in slices, .github/workflows/mutation.yml). MUTATE_ARGS passes options: --budget, --sample, --ref, ...
MODULE      ?= components stacks
MUTATE_ARGS ?=
.PHONY: mutate
$(VENV)/.mutate: $(VENV)/.test requirements-mutate.txt
	$(PIP) install --quiet --disable-pip-version-check -r requirements-mutate.txt
	touch $@

mutate: $(VENV)/.mutate
	$(PY) scripts/mutate.py $(MODULE) $(MUTATE_ARGS)

docs: $(VENV)/.runtime
	$(PY) -m stacks.reference

# Wall time and peak RSS of the offline plans (dev, prod, gke-dev, generated N-model stacks) against
# a process that imports exactly the SDK modules a prod plan loads; PASS/FAIL against bench/README.md.
.PHONY: bench
bench: $(VENV)/.runtime
	$(PY) -m bench.plan_bench $(BENCH_ARGS)

# One more replica (new node, warm node) and the monthly cost, before and after the cold-start settings
# (fastImagePull / imageStreaming, the Docker Hub mirror, the model cache, scale to zero): bench/cold_start.py.
.PHONY: bench-cold-start
bench-cold-start: $(VENV)/.runtime
	$(PY) -m bench.cold_start --json $(BUILD)/cold-start.json

clean:
	rm -rf $(VENV) .venv-checkov .venv-trivy .stamps $(BUILD) .pytest_cache tests/crd_validator/node_modules
