# The two commands of the README: `make run` (the main job) and `make test` (the tests).
# Both install what they need into .venv first (scripts/setup.sh).
DATA ?= ../shared/data/aria-all
PRESET ?= quick
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: setup run test test-slow screenshots
setup:
	@scripts/setup.sh

run: setup
	.venv/bin/leukedge pipeline --data $(DATA) --preset $(PRESET)

test: setup
	.venv/bin/python -m pytest -m "not slow" -q

test-slow: setup
	.venv/bin/python -m pytest -m slow -q

screenshots: setup
	SDL_VIDEODRIVER=offscreen .venv/bin/python scripts/screenshots.py --out docs/screenshots
