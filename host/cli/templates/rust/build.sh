#!/usr/bin/env bash
# Builds __NAME__.wasm, the component `grove run --plugins .` serves.
set -euo pipefail
cd "$(dirname "$0")"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/__SNAKE__.wasm" __NAME__.wasm
echo "built __NAME__.wasm"
