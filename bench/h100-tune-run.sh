#!/bin/bash
# One device call for issue 12's measured tile cap (bench/NOTES-mm_id.md) on the H100: on one
# synthetic Qwen3-30B-A3B (q4_k_m), `moetile tune` (timed, with its record), then a
# llama-bench style table at the default cap and at the tuned one, a decode profile, and
# llama.cpp CUDA's llama-bench on the same file once its build (started first, at low
# priority) is done.
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-tune-run.sh ANCHOR BUILD
# ANCHOR: see bench/h100-attn-run.sh; with - neither llama.cpp nor the table before tuning
# runs. BUILD holds moetile, optionally .xz-compressed.
# Writes $OUT/{gpu.txt,tune.txt,tuning.json,tables.md,profile.md,llama.md}. (Written for issue
# 12 on 2026-12-07; the device did not start again that session, so it has not run yet.)
A=$1 B=$2
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for z in "$B"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$B"/*
[ "$A" != - ] && setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
M=/tmp/q30.gguf
export XDG_CACHE_HOME=/tmp/cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout 150 "$B/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
[ "$A" != - ] && { echo "## before tuning (cap 128)"
  timeout 120 "$B/moetile" bench -m $M -p 512,2048 -n 128 -r 3 --output md 2>&1; } >>"$OUT/tables.md"
s=$(date +%s%N)
timeout 150 "$B/moetile" tune -m $M >"$OUT/tune.txt" 2>&1; echo "rc=$?" >>"$OUT/tune.txt"
echo "wall_ms=$(( ($(date +%s%N) - s) / 1000000 ))" | tee -a "$OUT/tune.txt"
tail -5 "$OUT/tune.txt"
cp /tmp/cache/moetile/tuning.json "$OUT/" 2>/dev/null
{ echo "## after tuning"
  timeout 120 "$B/moetile" bench -m $M -p 512,2048 -n 128 -r 3 --output md 2>&1; } >>"$OUT/tables.md"
grep -E "##|pp|tg|note" "$OUT/tables.md"
timeout 60 "$B/moetile" profile -m $M -p 512 -n 8 >"$OUT/profile.md" 2>&1
grep -E "per decode step" "$OUT/profile.md"
[ "$A" = - ] && exit 0
for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
tail -1 /tmp/llbuild.log
timeout 150 /tmp/ll/llama.cpp/build/bin/llama-bench -m $M -p 512,2048 -n 128 -r 3 -ngl 99 -o md >"$OUT/llama.md" 2>&1
tail -4 "$OUT/llama.md"
