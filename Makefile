# Everything runs inside .venv, created and filled from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: install test lint demo data bench clean

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

clean:
	rm -rf output inference_model dataset/shapes/voc dataset/shapes/coco
