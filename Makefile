# edgepack: every target sets up what it needs itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CACHE  ?= $(HOME)/.cache/edgepack
export EDGEPACK_CACHE := $(CACHE)
STAMP  := $(VENV)/.installed
CLIENTS := .venv-clients
CLIENTS_STAMP := $(CLIENTS)/.installed
# kubernetes-validate checks deploy/k3s/ offline (its own schemas); a venv of its own, as a CI job would have.
K8S := .venv-k8s
K8S_STAMP := $(K8S)/.installed
# The fleet's controller: ansible-core and ansible-lint (requirements/fleet.txt), a venv of their own.
FLEET := .venv-fleet
FLEET_STAMP := $(FLEET)/.installed

# Real third-party models (test fixtures and the corpus), fetched from PyPI wheels, never committed:
# PP-OCR's classifier, PP-OCRv4 detector and recogniser; Silero VAD's LSTM variants.
RAPIDOCR_WHEEL := rapidocr-onnxruntime==1.4.4
SILERO_WHEEL   := silero-vad==6.2.3
MODELS         := $(CACHE)/models
PPOCR_CLS      := $(MODELS)/ch_ppocr_mobile_v2.0_cls_infer.onnx
CORPUS_MODELS  := $(MODELS)/.corpus-rapidocr-1.4.4-silero-6.2.3
export EDGEPACK_MODELS := $(MODELS)

# The emulated device's host tools (Debian packages); gcc builds the tests' external delegate for this
# host, gcc-aarch64-linux-gnu for the emulated boards.
EMULATOR_TOOLS := qemu-user-static proot mmdebstrap iproute2 gcc libc6-dev gcc-aarch64-linux-gnu dpkg-dev
# `edgepack oci` builds images with umoci and skopeo (Debian's packages; no container daemon).
OCI_TOOLS := umoci skopeo
# Every shipped profile is installed and run on its emulated board in the tests.
TARGETS := rpi4 rpi5 zero2w arm64-trixie coral-usb
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo readme test check test-fast bench corpus corpus-models fixtures wheels emulator-tools oci-tools \
	device promtool fleet-tools clean

install: $(STAMP)

# pip runs --quiet (hundreds of lines otherwise; errors still show), so the wait is announced and timed.
$(STAMP): pyproject.toml requirements/host.txt requirements/dev.txt
	@echo "installing the host packages into $(VENV) (about 2 minutes; TensorFlow is most of it) ..."
	@start=$$(date +%s) && \
	  $(PYTHON) -m venv $(VENV) && \
	  $(PY) -m pip install --quiet --upgrade pip && \
	  $(PY) -m pip install --quiet -r requirements/dev.txt && \
	  $(PY) -m pip install --quiet --no-deps -e . && \
	  echo "installed the host packages into $(VENV) in $$(( $$(date +%s) - start )) s"
	@touch $@

$(CLIENTS_STAMP): requirements/clients.txt
	$(PYTHON) -m venv $(CLIENTS)
	$(CLIENTS)/bin/python -m pip install --quiet --upgrade pip
	$(CLIENTS)/bin/python -m pip install --quiet -r requirements/clients.txt
	touch $@

$(K8S_STAMP): requirements/k8s.txt
	$(PYTHON) -m venv $(K8S)
	$(K8S)/bin/python -m pip install --quiet --upgrade pip
	$(K8S)/bin/python -m pip install --quiet -r requirements/k8s.txt
	touch $@

$(FLEET_STAMP): requirements/fleet.txt
	$(PYTHON) -m venv $(FLEET)
	$(FLEET)/bin/python -m pip install --quiet --upgrade pip
	$(FLEET)/bin/python -m pip install --quiet -r requirements/fleet.txt
	touch $@

# The emulated fleet's boards are reached over real SSH: the tests start one sshd (Debian's openssh-server)
# per board on a loopback address of its own. Where apt starts services, the package's own ssh.service
# starts as well; the tests do not use it.
fleet-tools: $(FLEET_STAMP)
	@test -x /usr/sbin/sshd && command -v ssh >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client; }

# Prometheus' own linter for /metrics, and the server the dashboard test scrapes with: Debian's prometheus
# package has both (/usr/bin/promtool, /usr/bin/prometheus).
promtool:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

fixtures: $(PPOCR_CLS) $(CORPUS_MODELS)

corpus-models: $(CORPUS_MODELS)

$(CORPUS_MODELS): $(PPOCR_CLS)
	$(PY) -m pip download --quiet --no-deps --dest $(CACHE)/downloads $(SILERO_WHEEL)
	$(PY) -m zipfile -e $(CACHE)/downloads/silero_vad-6.2.3-py3-none-any.whl $(CACHE)/downloads/silero
	cp $(CACHE)/downloads/rapidocr/rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx \
	   $(CACHE)/downloads/rapidocr/rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx $(MODELS)/
	cp $(CACHE)/downloads/silero/silero_vad/data/*.onnx $(MODELS)/
	touch $@

$(PPOCR_CLS): | $(STAMP)
	mkdir -p $(CACHE)/downloads $(MODELS)
	$(PY) -m pip download --quiet --no-deps --dest $(CACHE)/downloads $(RAPIDOCR_WHEEL)
	$(PY) -m zipfile -e $(CACHE)/downloads/rapidocr_onnxruntime-1.4.4-py3-none-any.whl $(CACHE)/downloads/rapidocr
	cp $(CACHE)/downloads/rapidocr/rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx $@

emulator-tools:
	@command -v qemu-aarch64-static >/dev/null && command -v proot >/dev/null && command -v mmdebstrap >/dev/null \
	  && command -v ip >/dev/null && command -v gcc >/dev/null && test -f /usr/include/stdio.h \
	  && command -v aarch64-linux-gnu-gcc >/dev/null && command -v dpkg-scanpackages >/dev/null \
	  || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(EMULATOR_TOOLS); }

oci-tools:
	@command -v umoci >/dev/null && command -v skopeo >/dev/null \
	  || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(OCI_TOOLS); }

# Set-up for the emulated tests: every target's root filesystem and device wheels,
# both cached under $(CACHE); network is used here, never in the tests.
wheels: $(STAMP)
	$(PY) -m packager.fetch wheels $(TARGETS) tests/fixtures/profiles/host-x86_64.toml
	$(PY) -m packager.fetch runtimes $(TARGETS) tests/fixtures/profiles/rpi4-tflite-runtime.toml

# The emulated boards' trees, and the OCI image's base tree (bookworm arm64: the tests' rpi4 image).
device: wheels emulator-tools oci-tools
	$(PY) -m packager.emulator $(TARGETS)
	$(PY) -m packager.oci.base rpi4

# The demo builds for one board: only its wheels are fetched (once; cached).
DEMO_TARGET := rpi4
demo: $(STAMP)
	@$(PY) -m packager.fetch wheels $(DEMO_TARGET)
	@$(PY) examples/digits/demo.py --target $(DEMO_TARGET)

# The README's sample outputs, from a real run of its commands (examples/digits/readme_samples.py; the test
# suite fails when they drift).
readme: $(STAMP)
	@$(PY) -m packager.fetch wheels $(DEMO_TARGET)
	$(PY) examples/digits/readme_samples.py

# The gate CI runs: every capability, two workers (the emulated boards in one group on one of them), then the
# timing-sensitive tests alone. Prints the slowest tests and writes JUnit XML under build/.
TEST_ENV := EDGEPACK_PPOCR_CLS=$(PPOCR_CLS) EDGEPACK_CLIENTS_PYTHON=$(CURDIR)/$(CLIENTS)/bin/python \
	EDGEPACK_KUBERNETES_VALIDATE=$(CURDIR)/$(K8S)/bin/kubernetes-validate EDGEPACK_FLEET_BIN=$(CURDIR)/$(FLEET)/bin
test: $(STAMP) $(PPOCR_CLS) $(CORPUS_MODELS) device $(CLIENTS_STAMP) $(K8S_STAMP) promtool fleet-tools
	@mkdir -p build
	$(TEST_ENV) $(PY) -m pytest -m "not serial" -n 2 --dist loadgroup --durations=30 --junitxml=build/test-results.xml
	$(TEST_ENV) $(PY) -m pytest -m serial --durations=10 --junitxml=build/test-results-serial.xml

# Unit tests: no converter, no emulated board (a few minutes).
check: $(STAMP) $(K8S_STAMP) $(FLEET_STAMP)
	@mkdir -p build
	EDGEPACK_KUBERNETES_VALIDATE=$(CURDIR)/$(K8S)/bin/kubernetes-validate EDGEPACK_FLEET_BIN=$(CURDIR)/$(FLEET)/bin \
	  $(PY) -m pytest -m "not slow and not emulated" -n 2 --durations=10 --junitxml=build/check-results.xml

test-fast: check

bench: $(STAMP) $(PPOCR_CLS) corpus
	EDGEPACK_PPOCR_CLS=$(PPOCR_CLS) $(PY) benchmarks/bench.py

# Every corpus model built and run through edge-run; one table.
corpus: $(STAMP) $(CORPUS_MODELS)
	$(PY) benchmarks/corpus.py

clean:
	rm -rf $(VENV) $(CLIENTS) $(K8S) $(FLEET) build dist .pytest_cache
