# edgepack: every target sets up what it needs itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CACHE  ?= $(HOME)/.cache/edgepack
STAMP  := $(VENV)/.installed

# The PP-OCR text-direction classifier ships inside this wheel (test fixture).
RAPIDOCR_WHEEL := rapidocr-onnxruntime==1.4.4
PPOCR_CLS      := $(CACHE)/models/ch_ppocr_mobile_v2.0_cls_infer.onnx

.PHONY: install demo test test-fast bench fixtures clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/host.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

fixtures: $(PPOCR_CLS)

$(PPOCR_CLS): | $(STAMP)
	mkdir -p $(CACHE)/downloads $(CACHE)/models
	$(PY) -m pip download --quiet --no-deps --dest $(CACHE)/downloads $(RAPIDOCR_WHEEL)
	$(PY) -m zipfile -e $(CACHE)/downloads/rapidocr_onnxruntime-1.4.4-py3-none-any.whl $(CACHE)/downloads/rapidocr
	cp $(CACHE)/downloads/rapidocr/rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx $@

demo: $(STAMP)
	$(PY) examples/digits/demo.py

test: $(STAMP) $(PPOCR_CLS)
	EDGEPACK_PPOCR_CLS=$(PPOCR_CLS) $(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not emulated"

bench: $(STAMP) $(PPOCR_CLS)
	EDGEPACK_PPOCR_CLS=$(PPOCR_CLS) $(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
