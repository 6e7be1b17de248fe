#!/usr/bin/env bash
# ruff (lint and format), then the import-linter contracts of pyproject.toml. The contracts are checked on the installed
# layout (a wheel's tree in a temp folder): the restorer and method_configs folders sit at the top of the
# repository but install inside artifactworld_ns, which import-linter cannot follow in an editable install.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
.venv/bin/uv pip install --python .venv/bin/python --quiet --no-deps --target "$tree" . 2>/dev/null
(cd "$tree" && PYTHONPATH="$tree" "$OLDPWD/.venv/bin/lint-imports" --config "$OLDPWD/pyproject.toml" --no-cache)
