#!/usr/bin/env bash
# bench-blocksize.sh BUILD_DIR [DIR] [MB]: the cfile layer at 4, 16 and 64 KiB blocks.
set -euo pipefail
b=${1:-build}/tests/phifs
echo "| block | seq write MB/s | seq read MB/s | 4k randwrite ops/s | 4k randread ops/s | overhead % |"
echo "|---|---|---|---|---|---|"
for s in 12 14 16; do "$b/bench-blocksize-$s" "${2:-/var/tmp}" "${3:-256}"; done
