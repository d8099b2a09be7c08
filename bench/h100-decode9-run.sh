#!/bin/bash
# Issue 11/12 decode and prefill comparison (bench/NOTES-decode.md, run 9): two builds side by
# side on one synthetic Qwen3-30B-A3B (q4_k_m), then llama.cpp CUDA on the same file in the same
# call (~330 s on the H100): llama.cpp builds (low priority) while the stage profiles and kernel
# rows run, after the timed benches.
# Usage (on the device, repository root, Vulkan loader unpacked): bench/h100-decode9-run.sh
#   ANCHOR BASE BUILD; each build folder holds moetile and kernel_bench (optionally .xz).
# Writes $OUT/{gpu.txt,BASE.md,BUILD.md,profile-*.md,kernels.csv,llama.md}.
A=$1 BASE=$2 NEW=$3
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for d in "$BASE" "$NEW"; do for z in "$d"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$d"/*; done
M=/tmp/q30.gguf
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout 150 "$NEW/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
for b in "$BASE" "$NEW"; do
  n=$(basename "$b")
  timeout 70 "$b/moetile" bench -m $M -p 512 -n 128 -r 3 --output md >"$OUT/$n.md" 2>&1
  echo "$n: $(grep -E 'pp512|tg128' "$OUT/$n.md" | tr '\n' ' ')"
done
setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
for b in "$NEW" "$BASE"; do
  n=$(basename "$b")
  timeout 45 "$b/moetile" profile -m $M -p 512 -n 8 >"$OUT/profile-$n.md" 2>&1
  echo "$n: $(grep -E 'per decode step' "$OUT/profile-$n.md")"
done
[ -x "$NEW/kernel_bench" ] && timeout 60 "$NEW/kernel_bench" shape=all tokens=32 mv_tokens=1 \
  weights=q4k tiles=64 paths=coop16 >"$OUT/kernels.csv" 2>&1
for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
tail -1 /tmp/llbuild.log
timeout 90 /tmp/ll/llama.cpp/build/bin/llama-bench -m $M -p 512 -n 128 -r 3 -ngl 99 -o md \
  >"$OUT/llama.md" 2>&1
tail -4 "$OUT/llama.md"
