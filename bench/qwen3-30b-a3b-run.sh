#!/bin/bash
# One device call for the end-to-end numbers on a synthetic Qwen3-30B-A3B (q4_k_m): the GPU
# test suites, a stage profile, the llama-bench style table of this build and of a baseline
# build side by side (same card, same model), the tile-cap A/B and the context frontier.
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/qwen3-30b-a3b-run.sh NEW OLD   where NEW holds moetile and the test binaries
#   (kernels, ops, gpu_model, embed) of this build and OLD the baseline's moetile.
# Writes $OUT/{tests.txt,profile.md,table.md,table-baseline.md,tiles.md,frontier.{csv,svg,txt}}.
N=$1 O=$2
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
export MOETILE_REQUIRE_GPU=1
mkdir -p /work && ln -sfn "$PWD" /work/main # test binaries read /work/main/tests/fixtures
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/tests.txt"
for t in kernels ops gpu_model embed; do
  timeout 150 "$N/$t" --test-threads 1 >/tmp/test_$t.log 2>&1
  echo "$t rc=$? $(grep -E '^test result' /tmp/test_$t.log)" | tee -a "$OUT/tests.txt"
  grep -E "FAILED|panicked" /tmp/test_$t.log | head -5 | tee -a "$OUT/tests.txt"
done
M=/tmp/q30.gguf
timeout 120 "$N/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
timeout 100 "$N/moetile" profile -m $M -p 2048 -n 8 >"$OUT/profile.md" 2>&1
grep -E "GPU time" "$OUT/profile.md"
table() { timeout 150 "$1" bench -m $M -p 512,2048 -n 128 -r 3 "${@:2}" --output md; }
table "$N/moetile" >"$OUT/table.md" 2>&1; tail -5 "$OUT/table.md"
table "$O/moetile" >"$OUT/table-baseline.md" 2>&1; tail -5 "$OUT/table-baseline.md"
table "$N/moetile" --tile-max 32,64,128 >"$OUT/tiles.md" 2>&1; tail -5 "$OUT/tiles.md"
timeout 120 "$N/moetile" bench -m $M --ctx-start 2048 --ctx-max 8192 --step-incr 2048 \
  --gen-tokens 64 --csv "$OUT/frontier.csv" >"$OUT/frontier.txt" 2>&1
tail -6 "$OUT/frontier.txt"
