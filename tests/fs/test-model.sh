#!/usr/bin/env bash
# test-model: thousands of random operations on a phifs mount and on a plain directory,
# compared after every step, at checkpoints and across remounts (model_test.py).
. "$(dirname "$0")/lib.sh"
phi_setup model-patient
mkdir -p "$T/ref"
"$PHIFS" --key-file "$KEY" "$STORE" "$MNT" 2>>"$T/phifs.log"
remount="fusermount3 -u '$MNT' && '$PHIFS' --key-file '$KEY' '$STORE' '$MNT' 2>>'$T/phifs.log'"
for seed in ${PHI_MODEL_SEEDS:-1 2}; do
	python3 "$(dirname "$0")/model_test.py" --mnt "$MNT/model-patient" --ref "$T/ref" \
		--ops "${PHI_MODEL_OPS:-2500}" --seed "$seed" --remount-cmd "$remount" --threads 4 ||
		{ tail -20 "$T/phifs.log" >&2; fail "model test seed $seed"; }
done
ok "model test"
