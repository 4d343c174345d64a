#!/usr/bin/env bash
# test-gpu-scrub: on a GPU machine with gpurun built with CUDA, a job runs on the device and
# its status JSON says the device buffers (KV cache, activations) were zeroed by the scrub.
# Skips (77) without a GPU, or when this gpurun runs on the CPU (built without CUDA: e.g.
# the sanitizer build). Not yet checked here: a read-back of device memory after the scrub.
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 || { echo "SKIP: no GPU"; exit 77; }
here=$(cd "$(dirname "$0")" && pwd)
. "$here/run-lib.sh"
. "$here/docs-lib.sh"
run_store p-alpha p-beta p-gamma
write_docs
run_config
G add --principal user:nobody --patient p-alpha --role job --purpose job --for 1h >/dev/null
"$GPURUN" --config "$T/gpurun.conf" --status "$T/s.json" --patient p-alpha --documents 'notes/*' \
	--task summarize --model model.gguf --max-tokens 16 --id gpu-1 >"$T/out" 2>&1 || fail "gpurun: $(tail -2 "$T/out")"
[ "$(json "$T/s.json" scrub.device.backend)" = cuda ] || skip "gpurun ran on the CPU: $(json "$T/s.json" scrub.device.note)"
[ "$(json "$T/s.json" scrub.device.zeroed)" = True ] || fail "device buffers not zeroed"
[ "$(json "$T/s.json" scrub.host.engine_freed)" = True ] || fail "engine not freed"
ok "CUDA job: device KV cache and activations zeroed at the scrub; mount gone: $(json "$T/s.json" scrub.mount.gone)"
