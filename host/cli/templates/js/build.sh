#!/usr/bin/env bash
# Builds __NAME__.wasm, the component `grove run --plugins .` serves, with
# componentize-js (installed from npm into node_modules on first use).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/componentize-js ]; then
  npm install --no-audit --no-fund --silent
fi
# The actor needs no HTTP; clocks, random numbers and standard output stay.
node_modules/.bin/componentize-js app.js --wit wit --world-name actors:__NAME__/__NAME__-actor \
  --disable http fetch-event -o __NAME__.wasm
echo "built __NAME__.wasm"
