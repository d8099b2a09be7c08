#!/bin/bash
# One device call for issue 11's int8 mat-vecs (bench/NOTES-decode.md): the kernel bench's
# mat-vec rows (f32 and int8 inputs) at both expert shapes, `moetile verify` of the int8
# mat-vecs against the CPU reference on a 2-layer file, then llama-bench style tables of the
# builds side by side on one synthetic Qwen3-30B-A3B (q4_k_m): NEW, NEW with --f32-mat-vec
# (the baseline), and each VARIANT (another build of NEW: its kernel-bench mat-vec rows too);
# then llama.cpp CUDA's llama-bench on the same file when its build (started after the kernel
# bench, at low priority) is done.
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-int8-run.sh ANCHOR NEW [VARIANT...]
# ANCHOR: see bench/h100-attn-run.sh (- leaves llama.cpp out). NEW and each VARIANT hold
# moetile and kernel_bench, optionally .xz-compressed.
# Writes $OUT/{gpu.txt,kernels.csv,verify.txt,tables.md,llama.md}.
A=$1 NEW=$2; shift 2
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for d in "$NEW" "$@"; do for z in "$d"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$d"/*; done
M=/tmp/q30.gguf S=/tmp/q30-2l.gguf
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout 150 "$NEW/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
w=q8_0,q4k,q2k,iq2xxs,q6k
for b in "$NEW" "$@"; do
  echo "# build $(basename "$b")" >>"$OUT/kernels.csv"
  timeout 100 "$b/kernel_bench" shape=all tokens=32 mv_tokens=1 weights=$w tiles=64 paths=coop16 \
    >>"$OUT/kernels.csv" 2>&1
  w=q4k,q2k,iq2xxs
done
grep -E "^(mv_|# build)" "$OUT/kernels.csv" | cut -d, -f1-7
[ "$A" != - ] && setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
timeout 60 "$NEW/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m --layers 2 -o $S --force | tail -1
timeout 90 "$NEW/moetile" verify -m $S >"$OUT/verify.txt" 2>&1; echo "rc=$?" >>"$OUT/verify.txt"
tail -6 "$OUT/verify.txt"
run() { # name, binary, flags
  timeout 100 "$2" bench -m $M -p 512 -n 128 -r 3 --output md $3 >/tmp/table.md 2>&1
  { echo "## $1"; cat /tmp/table.md; } >>"$OUT/tables.md"
  echo "$1 $(grep -E 'tg128' /tmp/table.md | tail -1)"
}
run int8 "$NEW/moetile" ""
run f32mv "$NEW/moetile" "--f32-mat-vec"
for b in "$@"; do run "$(basename "$b")" "$b/moetile" ""; done
[ "$A" = - ] && exit 0
for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
tail -1 /tmp/llbuild.log
timeout 120 /tmp/ll/llama.cpp/build/bin/llama-bench -m $M -p 512 -n 128 -r 3 -ngl 99 -o md >"$OUT/llama.md" 2>&1
tail -4 "$OUT/llama.md"
