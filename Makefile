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
	$(VENV)/lint-imports --no-cache

bench: setup
	$(VENV)/python bench/store.py
	$(VENV)/python bench/detect.py
	$(VENV)/python bench/failover.py
	$(VENV)/python bench/failover.py --subject postgres --trials 10
	$(VENV)/python bench/ratelimiter.py
	$(VENV)/python bench/agent.py
	$(VENV)/python bench/eval.py

# The demo's home must be one the lab user can traverse (a clone under /root is not), so
# as root it lives in /var/lib/operator/demo; MODEL=SPEC picks the agent's model.
DEMO_HOME ?= $(if $(filter 0,$(shell id -u)),/var/lib/operator/demo,$(CURDIR)/.operator-demo)

demo: setup
	@mkdir -p $(DEMO_HOME) && chmod 755 $(DEMO_HOME)
	OPERATOR_HOME=$(DEMO_HOME) $(VENV)/operator demo etcd $(if $(MODEL),--model $(MODEL)) $(if $(AUTO),--auto)

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
