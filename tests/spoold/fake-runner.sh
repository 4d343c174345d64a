#!/bin/sh
# fake-runner.sh JOBFILE: the stand-in for gpurun in spoold's tests. It appends its job's
# name to $SPOOLD_TEST_LEDGER (one short O_APPEND write, atomic), sleeps briefly, writes its
# output and the status file spoold reads tokens from. Job ids containing "fail" exit 3;
# "sleepy" ones sleep long (for the lifetime and cancel tests); "stubborn" ones also ignore
# SIGTERM.
set -u
job=$1
id=$(basename "$job" .json)
[ -n "${SPOOLD_TEST_LEDGER:-}" ] && echo "$id $SPOOLD_NAME" >> "$SPOOLD_TEST_LEDGER"
case "$id" in
*stubborn*) trap '' TERM; sleep 30 ;;
*sleepy*) trap 'echo "$id" >> "${SPOOLD_TEST_LEDGER}.term"; exit 143' TERM; sleep 30 & wait ;;
*) sleep "${SPOOLD_TEST_SLEEP:-0.05}" ;;
esac
if [ -n "${SPOOLD_TEST_OUT:-}" ]; then
	printf 'output of %s on GPUs %s\n' "$id" "$CUDA_VISIBLE_DEVICES" > "$SPOOLD_TEST_OUT/.$id.tmp"
	mv "$SPOOLD_TEST_OUT/.$id.tmp" "$SPOOLD_TEST_OUT/$id.out"
fi
printf '{"tokens_in": 120, "tokens_out": 34}\n' > "$SPOOLD_STATUS_FILE"
case "$id" in *fail*) exit 3 ;; esac
exit 0
