#!/usr/bin/env bash
# Builds iris and runs the whole test suite: once optimised (Release), once under AddressSanitizer + UBSan.
# Installs the Debian packages it needs first. Usage: scripts/test.sh [--no-asan]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=${IRIS_JOBS:-2}
# Unity builds (16 sources per compiler run): most of the compile time is the same headers (gtest, JSON, the
# standard library) parsed again for every file; batched, a test folder compiles in about half the CPU time.
unity=(-DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DIRIS_BUILD_BENCH=OFF "${unity[@]}" >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 600)
if [[ ${1:-} != --no-asan ]]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIRIS_SANITIZE=ON -DIRIS_BUILD_BENCH=OFF "${unity[@]}" \
    >/dev/null
  cmake --build build-asan -j"$jobs"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -j"$jobs" --timeout 900)
fi
