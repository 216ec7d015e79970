# Everything runs inside .venv, created and filled from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: install test lint demo data bench bench-slim bench-ssd clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(PY) dataset/shapes/make_shapes.py --if-missing

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint data
	$(VENV)/bin/pytest

demo: data
	$(PY) tools/demo.py

bench: data
	$(PY) bench/bench_train.py

bench-slim: data      # network slimming vs L1 pruning, tiny YOLOv3-MobileNetV2 (~50 min)
	$(PY) bench/bench_slim.py

bench-ssd: data       # tiny SSD training target and uniform -20% pruning (~15 min)
	$(PY) bench/bench_ssd.py

clean:
	rm -rf output inference_model dataset/shapes/voc dataset/shapes/coco
