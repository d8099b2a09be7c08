#!/bin/bash
# One device call comparing builds of moetile side by side on the H100 (see
# bench/NOTES-decode.md), without llama.cpp: the first build is the baseline, whose ratio to
# llama.cpp an earlier call of bench/h100-decode-run.sh measured. Per build: the mat-vec and
# grouped-matmul kernel bench, a llama-bench style table, and a stage profile while time
# allows (the call has 10 minutes).
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-variants-run.sh BUILD...
# Each BUILD folder holds moetile and kernel_bench, optionally .xz-compressed.
# Writes $OUT/{gpu.txt,kernels.csv,table-NAME.md,profile-NAME.md}.
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for d in "$@"; do for z in "$d"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$d"/*; done
M=/tmp/q30.gguf
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout 150 "$1/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
for b in "$@"; do
  n=$(basename "$b")
  echo "# build $n" >>"$OUT/kernels.csv"
  timeout 60 "$b/kernel_bench" shape=all tokens=32 mv_tokens=1 weights=q4k,q2k,iq2xxs,q8_0 \
    tiles=64 paths=coop16 >>"$OUT/kernels.csv" 2>&1
  timeout 90 "$b/moetile" bench -m $M -p 512 -n 128 -r 3 --output md >"$OUT/table-$n.md" 2>&1
  echo "$n $(grep tg128 "$OUT/table-$n.md" | tail -1)"
done
grep -E "^# build|^mv_" "$OUT/kernels.csv" | cut -d, -f1-6
for b in "$@"; do
  [ $SECONDS -gt 330 ] && break
  n=$(basename "$b")
  timeout 45 "$b/moetile" profile -m $M -p 512 -n 8 >"$OUT/profile-$n.md" 2>&1
  echo "$n $(grep -E "per decode step" "$OUT/profile-$n.md")"
done
