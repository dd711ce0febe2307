#!/usr/bin/env bash
# Installs the Debian 12 packages bmojo needs to build and test. Idempotent: installs only what is missing.
set -euo pipefail
packages=(build-essential cmake libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev libgtest-dev
          libbenchmark-dev libhnswlib-dev libdnnl-dev libsentencepiece-dev python3-torch python3-numpy
          clang libomp-dev libclang-rt-dev libopenmpi-dev openmpi-bin libcpp-httplib-dev)
missing=()
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
