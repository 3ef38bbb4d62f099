# Every target that needs Python depends on .venv/.installed, so on a fresh clone
# `make test` or `make demo` does the whole set-up first.
PY := .venv/bin/python
SEGCLI := .venv/bin/segcli
DATA ?= ../shared/data

.PHONY: install test demo bench lint readme-compare clean

install: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: these wheels lie on local disk; a loose range would fetch a CUDA build.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: install
	$(PY) -m pytest -q -n 2 --durations=10

lint: install
	$(PY) -m ruff check segcli tests benchmarks

demo: install
	bash scripts/demo.sh

bench: install
	$(PY) -m benchmarks.run


readme-compare: install
	$(SEGCLI) compare --out docs/compare

clean:
	rm -rf .venv build *.egg-info .pytest_cache runs demo_out
