.PHONY: run test lint
run:  ## Run the platform (embedded default) on http://127.0.0.1:8000
	scripts/run.sh
test:  ## Run the whole test suite against real PostgreSQL, Redis and Chromium
	scripts/test.sh
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .
