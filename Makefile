# Dunnage — the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv lint typecheck test test-unit test-e2e fuzz demo binaries image proto chart-crds clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check dunnage tests e2e bench

typecheck: venv
	$(VENV)/bin/mypy

# Fast tests only: no Kubernetes binaries needed.
test-unit: venv
	$(PY) -m pytest -q tests

# The property tests with new random examples each round (make test draws the same ones every
# run; tests/conftest.py). FUZZ_ROUNDS=20 make fuzz for a longer search.
FUZZ_ROUNDS ?= 5
fuzz: venv
	for round in $$(seq $(FUZZ_ROUNDS)); do \
		HYPOTHESIS_PROFILE=explore $(PY) -m pytest -q \
			$$(grep -l '^from hypothesis' tests/test_*.py) || exit 1; \
	done

# Builds the Kubernetes binaries into ~/.cache/dunnage when missing, then runs the e2e suite.
binaries:
	bash dunnage/devcluster/build.sh

test-e2e: venv binaries
	$(PY) -m pytest -q e2e

test: lint typecheck test-unit test-e2e

demo: venv binaries
	$(VENV)/bin/dunnage demo

# The image the chart runs, as an OCI archive in build/ (buildah, no Docker; image/build.sh).
# Where no container registry is reachable: make image BASE=debootstrap
image: venv
	bash image/build.sh

# Regenerate the gRPC code committed under dunnage/solver/proto_gen.
proto: venv
	$(PY) -m grpc_tools.protoc -Idunnage/solver/proto_gen=proto/dunnage/solver/v1 \
		--python_out=. --pyi_out=. --grpc_python_out=. dunnage/solver/proto_gen/solver.proto

# The chart installs the CRDs from manifests/crds (the one source); tests check the copies.
# A CRD whose schema changed gets the next dunnage.io/schema-revision (dunnage/cluster/crds.py).
chart-crds: venv
	$(PY) -m dunnage.cluster.crds

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
