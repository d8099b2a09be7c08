#!/bin/bash
# One H100 device call (see bench/NOTES-mm_id.md): correctness tests, the full kernel table
# (both shapes, T = 512/2048/4096, all weights, tiles 32/64/128, reg and coop16; one process
# per shape and weight type, since rows of one process drifted up to 2x between weight types),
# the mat-vec/mm_id crossover, and variant builds (kernel_bench_*.gz, optional).
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-run.sh DIR   where DIR holds kernels_test, kernel_bench and kernel_bench_*.gz
# Writes $OUT/{gpu.txt,tests.log,kernels.csv,crossover.csv,variants.csv}.
set -o pipefail
B=$1
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
export MOETILE_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
shopt -s nullglob
for z in "$B"/*.gz; do gunzip -kf "$z"; done
shopt -u nullglob
chmod +x "$B"/kernel*
timeout 120 "$B/kernels_test" --test-threads 1 >"$OUT/tests.log" 2>&1
echo "tests: $(grep "test result" "$OUT/tests.log")"; grep -E "FAILED|panicked" "$OUT/tests.log" | head -20
for shape in qwen deepseek; do
  for w in f16 q8_0 q4k q2k iq2xxs; do
    timeout 100 "$B/kernel_bench" shape=$shape tokens=512,2048,4096 mv_tokens=1 weights=$w tiles=32,64,128 paths=reg,coop16
  done
done >"$OUT/kernels.csv" 2>&1
T=1,2,4,8,16,24,32,48,64
for w in q4k iq2xxs; do
  timeout 60 "$B/kernel_bench" shape=qwen tokens=$T mv_tokens=$T weights=$w tiles=32 paths=reg,coop16
done >"$OUT/crossover.csv" 2>&1
shopt -s nullglob
{
  for v in "$B"/kernel_bench_*; do
    case $v in *.gz) continue;; esac
    for w in q4k iq2xxs; do
      echo "# variant $(basename "$v") $w"
      timeout 60 "$v" shape=qwen tokens=16,512,2048,4096 weights=$w tiles=32,64,128 paths=coop16 mv_tokens=1
    done
  done
} >"$OUT/variants.csv" 2>&1
echo "== summary (ms)"
for f in kernels crossover variants; do
  echo "-- $f"; grep -v '^map_\|^# paths\|^# adapter\|^# shader' "$OUT/$f.csv" | awk -F, '$1 == "kernel" {next} NF >= 8 {printf "%s %s %s %s\n", $1, $2, $3, $4; next} {print}' | sed 's/_f32_/_/; s/qwen3-30b-a3b/q/; s/deepseek-v4-flash/d/'
done
