#!/usr/bin/env bash
# Installs the Debian 12 packages iris needs to build, run and test. Idempotent; run as root (or with sudo).
# Usage: scripts/install-deps.sh [--golden]   (--golden adds python3-torch/numpy/pil for scripts/ golden generators)
set -euo pipefail
pkgs=(build-essential cmake pkg-config git
      libdnnl-dev            # matrix products (f32, bf16)
      ocl-icd-opencl-dev     # dnnl-config.cmake requires OpenCL (only a Recommends of libdnnl-dev)
      nlohmann-json3-dev     # JSON
      libcpp-httplib-dev     # HTTP server
      libcli11-dev           # command line
      libssl-dev             # SHA-256 content hashes (image-embedding cache)
      libpcre2-dev           # tokenizer pre-tokenizer regexes
      libutf8proc-dev        # Unicode normalisation
      libjpeg62-turbo-dev libpng-dev zlib1g-dev  # image decoding
      libopenmpi-dev openmpi-bin  # distributed training
      libgtest-dev libgmock-dev libbenchmark-dev
      chromium               # serve tests: the chat page in headless Chromium
)
# serve tests: Node.js and npm (the openai client, playwright-core). Machines may bring their own Node.js (whose
# package conflicts with Debian's npm), so Debian's are installed only when the commands are missing.
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)
if [[ ${1:-} == --golden ]]; then pkgs+=(python3-numpy python3-torch python3-pil); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
