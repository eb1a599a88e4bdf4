# The two promises of the README:
#   make plan  - set up and run the offline plan of the dev stack (Pulumi's mock engine, no cloud)
#   make test  - set up and run every test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STACK  ?= dev
BUILD  := build

.PHONY: plan plan-prod test lint docs clean help

help:
	@echo "make plan [STACK=dev]  offline plan: resource tree, $(BUILD)/plan-<stack>.json, manifests"
	@echo "make test              install test dependencies and run pytest"
	@echo "make docs              print the config reference table for README.md"
	@echo "make clean             remove the virtualenv and build output"

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt requirements-nodeps.txt model_tools/requirements.txt model_tools/requirements-nodeps.txt
	$(PIP) install --quiet --disable-pip-version-check -r requirements-test.txt
	$(PIP) install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $@

plan: $(VENV)/.runtime
	$(PY) -m stacks plan --stack $(STACK) --json $(BUILD)/plan-$(STACK).json --manifests $(BUILD)/manifests-$(STACK)

plan-prod:
	$(MAKE) plan STACK=prod

test: $(VENV)/.test
	$(PY) -m pytest

docs: $(VENV)/.runtime
	$(PY) -c "from stacks.reference import reference_markdown; print(reference_markdown())"

clean:
	rm -rf $(VENV) $(BUILD) .pytest_cache
