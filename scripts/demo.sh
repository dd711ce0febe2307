#!/usr/bin/env bash
# The README's first command: install, build, then train the built-in default model on MQAR and print
# its accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build/bmojo train --out runs/demo "$@"
