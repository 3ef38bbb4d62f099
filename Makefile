# Every target that needs Python depends on .venv/.installed, so on a fresh clone
# `make test` or `make demo` does the whole set-up first.
PY := .venv/bin/python
SEGCLI := .venv/bin/segcli
DATA ?= ../shared/data

.PHONY: install test test-long demo bench docs-bench lint docs docs-compare compare-real compare-boundary readme-demo clean weights weights-shapes weights-nuclei weights-nuclei_he weights-membrane models-readme

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

# The claims that need minutes of training on the real data (about 8 minutes on the idle 2 cores; skipped without it).
test-long: install
	$(PY) -m pytest -q -m long

lint: install
	$(PY) -m ruff check segcli tests benchmarks scripts

demo: install
	bash scripts/demo.sh

# Every speed target as PASS/FAIL against references timed in the same run (under 10 idle minutes on 2 cores);
# writes benchmarks/results.json. docs-bench keeps a run: docs/bench/results.json and docs/performance.md's table.
bench: install
	$(PY) -m benchmarks.run

docs-bench: install
	mkdir -p docs/bench
	cp benchmarks/results.json docs/bench/results.json
	PYTHONPATH=. $(PY) scripts/docs_bench.py docs/bench/results.json docs/performance.md

# The documentation site (mkdocs.yml, pages in docs/) into site/; --strict: a broken link or a missing page fails.
# tests/test_docs.py runs the same build in `make test`.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The default compare run (synthetic context data, 4 approaches x 3 seeds of 80 steps; 6.3 minutes on the idle 2 cores);
# docs/comparing.md shows its tables, verdicts and plots.
docs-compare: install
	rm -rf runs/compare-default
	$(SEGCLI) compare --out runs/compare-default
	mkdir -p docs/compare
	cd runs/compare-default && cp report.md results.json results.csv grid.png scaling.png tradeoff.png ../../docs/compare/
	$(PY) scripts/docs_compare.py docs/compare/results.json docs/comparing.md

# compare on real data (docs/compare/isbi, docs/compare/dsb): ISBI 2012 membranes (0/255 masks) and the DSB 2018
# nuclei in semantic mode (nucleus vs background), FCN-8s and U-Net with 3 seeds each, 128 px windows at the images'
# own scale: 8.7 minutes in all on the idle 2-core machine.
REAL_STEPS_ISBI ?= 150
REAL_STEPS_DSB ?= 100
COMPARE_REAL := --approaches fcn,unet --seeds 3 --img-size 128 --sizes 256,512
compare-real: install
	rm -rf runs/compare-isbi runs/compare-dsb
	$(SEGCLI) compare --data $(DATA)/isbi2012_membrane --binary --budget-steps $(REAL_STEPS_ISBI) $(COMPARE_REAL) --out runs/compare-isbi
	$(SEGCLI) compare --data $(DATA)/dsb2018_nuclei --budget-steps $(REAL_STEPS_DSB) $(COMPARE_REAL) --out runs/compare-dsb
	for d in isbi dsb; do mkdir -p docs/compare/$$d && \
	  (cd runs/compare-$$d && cp report.md results.json results.csv grid.png scaling.png tradeoff.png ../../docs/compare/$$d/); done

# The boundary study (docs/compare/boundary.md): U-Net vs FCN-8s boundary F1 across budgets and tolerances. Short
# budgets come from the runs above (context data 80 steps, ISBI 150, DSB 100); this adds a longer budget on the
# context data (240 steps) and on ISBI membranes (300 steps), 2 seeds each: 10.4 minutes on the idle 2-core machine.
BOUNDARY_STEPS_CONTEXT ?= 240
BOUNDARY_STEPS_ISBI ?= 300
compare-boundary: install
	rm -rf runs/boundary
	$(SEGCLI) compare --approaches fcn,unet --budget-steps $(BOUNDARY_STEPS_CONTEXT) --seeds 2 --sizes 128 \
	  --out runs/boundary/context-long
	$(SEGCLI) compare --data $(DATA)/isbi2012_membrane --binary --approaches fcn,unet --budget-steps $(BOUNDARY_STEPS_ISBI) \
	  --seeds 2 --img-size 128 --sizes 128 --out runs/boundary/isbi-long
	for d in context-long isbi-long; do mkdir -p docs/compare/$$d && cp runs/boundary/$$d/results.json docs/compare/$$d/; done
	$(PY) scripts/boundary_study.py docs/compare/boundary.md docs/compare/boundary.png \
	  docs/compare docs/compare/context-long docs/compare/isbi docs/compare/isbi-long docs/compare/dsb

# The pictures of the README and the docs (docs/images/), drawn by the demo.
readme-demo: install
	README_IMAGES=1 bash scripts/demo.sh

# Bundled models (models/): retrain from scratch, score on held-out test data, write the card, models/README.md
# and docs/models.md's table.
# shapes: about 22 min on an idle 2-core CPU; nuclei: 28 min of training (needs $(DATA)/dsb2018_nuclei). membrane
# is trained and scored but never shipped (ISBI 2012 is licensed for non-commercial use only).
weights: weights-shapes weights-nuclei

weights-shapes weights-nuclei weights-nuclei_he weights-membrane: weights-%: install
	PY=$(PY) DATA=$(DATA) bash scripts/weights.sh $*

# models/README.md and docs/models.md's table from the cards, with sizes and CPU latencies measured here.
models-readme: install
	$(PY) scripts/models_readme.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache runs demo_out site
