#!/bin/sh
# bench.sh [PHI_LLM] [MODELS_DIR]: pp512 and tg128 (tokens/s, llama-bench's names) of phi-llm
# on stories260K and on random-weight models with Llama-3.2-1B and Llama-3.1-8B shapes in
# F16, Q8_0 and Q4_K (generated once into $BENCH_DIR, default /var/tmp/phi-bench; never the
# repo). Each decode figure is printed beside its limit: the measured single-thread memory
# bandwidth divided by the bytes of weights read per token (the file size, less the
# embedding table when the output matrix is separate).
# Environment: THREADS (1), PP (512), TG (128), SHAPES ("1b 8b"; "none" for stories260K only),
# TYPES ("f16 q8_0 q4_k").
# 8B models are skipped when RAM or disk is short. Not a test: never asserts on durations.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
LLM=${1:-$here/../../build/gpurun/phi-llm}
MODELS=${2:-$here/../../../shared/models}
BENCH_DIR=${BENCH_DIR:-/var/tmp/phi-bench}
THREADS=${THREADS:-1}
PP=${PP:-512}
TG=${TG:-128}
PY=/usr/bin/python3
mkdir -p "$BENCH_DIR"

bw=$($PY -c '
import numpy as np, time
a = np.ones(1 << 28, np.float32)   # 1 GiB, read-only pass
a.sum()
t = time.perf_counter()
for _ in range(4):
    a.sum()
print("%.2f" % (4 * a.nbytes / (time.perf_counter() - t) / 1e9))')
echo "memory bandwidth (1 thread, read): $bw GB/s; threads $THREADS; pp$PP, tg$TG"
printf '%-28s %10s %12s %12s %14s\n' model size_MB pp_tok/s tg_tok/s tg_limit_tok/s

run() { # name path embd_bytes
	size=$(stat -c %s "$2")
	out=$("$LLM" -m "$2" -t "$THREADS" -c $((PP > TG ? PP + 8 : TG + 8)) --bench-pp "$PP" --bench-tg "$TG" 2>/dev/null)
	pp=$(echo "$out" | awk '/^pp/ {print $2}')
	tg=$(echo "$out" | awk '/^tg/ {print $2}')
	lim=$(awk -v bw="$bw" -v s="$size" -v e="$3" 'BEGIN {printf "%.1f", bw * 1e9 / (s - e)}')
	printf '%-28s %10.1f %12s %12s %14s\n' "$1" "$(awk -v s="$size" 'BEGIN {print s / 1e6}')" "$pp" "$tg" "$lim"
}

for q in f32 f16 q8_0; do
	[ -f "$MODELS/stories260K-$q.gguf" ] && run "stories260K-$q" "$MODELS/stories260K-$q.gguf" 0
done

mem_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
disk_kb=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 {print $4}')
for shape in ${SHAPES:-1b 8b}; do
	case $shape in 1b | 8b) ;; *) continue ;; esac
	for t in ${TYPES:-f16 q8_0 q4_k}; do
		case $shape-$t in
		1b-f16) need=2600000 ;; 1b-q8_0) need=1400000 ;; 1b-q4_k) need=800000 ;;
		8b-f16) need=16500000 ;; 8b-q8_0) need=8700000 ;; 8b-q4_k) need=4700000 ;;
		esac
		f="$BENCH_DIR/phi-$shape-$t.gguf"
		if [ ! -f "$f" ]; then
			if [ "$disk_kb" -lt $((need + 2000000)) ]; then
				echo "$shape-$t: skipped (disk short)"; continue
			fi
			$PY "$here/gen-bench-model.py" "$shape" "$t" "$f"
			disk_kb=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 {print $4}')
		fi
		if [ "$mem_kb" -lt $((need * 5 / 4)) ]; then
			echo "$shape-$t: skipped (RAM short)"; continue
		fi
		# the embedding table is not read per token unless tied (1b)
		case $shape-$t in
		8b-f16) e=$((128256 * 4096 * 2)) ;; 8b-q8_0) e=$((128256 * 4096 / 32 * 34)) ;;
		8b-q4_k) e=$((128256 * 4096 / 256 * 144)) ;; *) e=0 ;;
		esac
		run "llama-$shape-shape-$t" "$f" "$e"
	done
done
