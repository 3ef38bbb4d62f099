# Every target that needs Python depends on .venv/.installed, so on a fresh clone
# `make test` or `make demo` does the whole set-up first.
PY := .venv/bin/python
SEGCLI := .venv/bin/segcli
DATA ?= ../shared/data

.PHONY: install test demo bench lint readme-compare readme-demo clean

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
	$(PY) -m ruff check segcli tests benchmarks scripts

demo: install
	bash scripts/demo.sh

bench: install
	$(PY) -m benchmarks.run


# The default compare run (synthetic context data, about 9 minutes on 2 cores); the README shows its table and plots.
readme-compare: install
	rm -rf runs/compare-default
	$(SEGCLI) compare --out runs/compare-default
	mkdir -p docs/compare
	cd runs/compare-default && cp report.md results.json results.csv grid.png scaling.png tradeoff.png ../../docs/compare/
	$(PY) scripts/readme_compare.py docs/compare/results.json README.md

# The pictures of the README's predict section, drawn by the demo.
readme-demo: install
	README_IMAGES=1 bash scripts/demo.sh

clean:
	rm -rf .venv build *.egg-info .pytest_cache runs demo_out
