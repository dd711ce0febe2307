#!/usr/bin/env bash
# Installs the Debian 12 packages bmojo needs to build and test. Idempotent: installs only what is missing.
set -euo pipefail
packages=(build-essential cmake libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev libgtest-dev
          libbenchmark-dev libhnswlib-dev libdnnl-dev libsentencepiece-dev python3-torch python3-numpy
          clang libomp-dev libclang-rt-dev libopenmpi-dev openmpi-bin libcpp-httplib-dev
          python3-matplotlib)
missing=()
# Node.js and npm for the server's client test; a machine that already has them (say from NodeSource,
# whose nodejs bundles npm and conflicts with Debian's npm package) keeps its own.
command -v npm > /dev/null || packages+=(nodejs npm)
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Clients bmojo did not write, for the server's tests and load measurements (tests/serve/clients): the
# official openai package and autocannon, at the versions package-lock.json pins.
clients="$(cd "$(dirname "$0")/.." && pwd)/tests/serve/clients"
if ! [ -f "$clients/node_modules/openai/package.json" ] || ! [ -f "$clients/node_modules/autocannon/package.json" ]; then
  npm ci --prefix "$clients" --no-audit --no-fund --loglevel=error
fi
