.PHONY: setup test lint bench demo clean

VENV := .venv/bin

setup:
	@bash scripts/setup.sh

test: setup
	$(VENV)/pytest

lint: setup
	$(VENV)/ruff check src tests bench
	$(VENV)/ruff format --check src tests bench
	$(VENV)/mypy

bench: setup
	$(VENV)/python bench/store.py
	$(VENV)/python bench/detect.py
	$(VENV)/python bench/ratelimiter.py
	$(VENV)/python bench/agent.py

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
