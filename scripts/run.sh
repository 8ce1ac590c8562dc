#!/usr/bin/env bash
# Run the platform on the embedded default: SQLite, in-process worker and dispatcher, simulators, demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export DEBUG="${DEBUG:-true}"
exec .venv/bin/python manage.py serve "$@"
