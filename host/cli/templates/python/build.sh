#!/usr/bin/env bash
# Builds __NAME__.wasm, the component `grove run --plugins .` serves, with
# componentize-py (installed into the virtualenv $VENV, default .venv, on
# first use).
set -euo pipefail
cd "$(dirname "$0")"
venv=${VENV:-.venv}
version=0.25.1
if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "componentize-py==$version"
fi
"$venv/bin/componentize-py" -d wit -w actors:__NAME__/__NAME__-actor componentize app -o __NAME__.wasm
echo "built __NAME__.wasm"
