#!/bin/bash
# Exploration run on the H100 (see bench/NOTES-mm_id.md): correctness tests, then kernel
# timings of the current build and of variant builds, in one device call.
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-explore.sh DIR   where DIR holds kernels_test, kernel_bench and kernel_bench_*.gz
set -o pipefail
B=$1
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
export MOETILE_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
for z in "$B"/*.gz; do gunzip -kf "$z"; done
chmod +x "$B"/kernel*
W=f16,q8_0,q4k,q2k,iq2xxs
timeout 180 "$B/kernels_test" --test-threads 1 >"$OUT/tests.log" 2>&1
echo "tests: $(grep "test result" "$OUT/tests.log")"; grep -E "FAILED|panicked" "$OUT/tests.log" | head -20
timeout 150 "$B/kernel_bench" shape=qwen tokens=512,2048 weights=$W tiles=32,64,128 paths=reg,coop16 >"$OUT/main.csv" 2>&1
timeout 60 "$B/kernel_bench" shape=qwen tokens=1,2,4,8,16 mv_tokens=1,2,4,8,16 weights=q4k tiles=32 paths=reg,coop16 >"$OUT/crossover.csv" 2>&1
timeout 90 "$B/kernel_bench" shape=deepseek tokens=512,2048 weights=q4k tiles=32,64,128 paths=coop16 mv_tokens=1 >"$OUT/deepseek.csv" 2>&1
for v in "$B"/kernel_bench_*; do
  case $v in *.gz) continue;; esac
  echo "# variant $(basename "$v")"
  timeout 60 "$v" shape=qwen tokens=16,512,2048,4096 weights=q4k,iq2xxs tiles=32,64,128 paths=coop16
done >"$OUT/variants.csv" 2>&1
echo "== summary (ms)"
for f in main crossover deepseek variants; do
  echo "-- $f"; grep -v '^map_\|^# paths\|^# adapter' "$OUT/$f.csv" | awk -F, '$1 == "kernel" {next} NF >= 8 {printf "%s %s %s\n", $1, $3, $4; next} {print}'
done
grep -h '^map_' "$OUT/main.csv" "$OUT/crossover.csv" | cut -d, -f1,3,4
