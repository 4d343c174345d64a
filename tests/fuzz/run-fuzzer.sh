#!/bin/sh
# run-fuzzer.sh FUZZER SEED_CORPUS WORK_CORPUS: fuzz for a bounded time; new inputs go to WORK_CORPUS,
# never into the source tree. PHI_FUZZ_SECONDS overrides the default 20 s.
set -eu
mkdir -p "$3"
exec "$1" -max_total_time="${PHI_FUZZ_SECONDS:-20}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$3" "$2"
