#!/bin/bash
# One device call for issues 11 and 12 after the int8 mat-vecs (bench/NOTES-decode.md,
# bench/NOTES-mm_id.md): on a synthetic Qwen3-30B-A3B (q4_k_m) a decode profile, `moetile
# tune` (timed, with its record) and a llama-bench style table at the tuned cap; on the
# DeepSeek-shaped file (`ds4-flash-moe`, iq2_xxs-q2_k, 6 layers) a table at the default cap;
# then llama.cpp CUDA's llama-bench on both files, built in the background from the start.
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-tune-ds-run.sh ANCHOR BUILD [VARIANT]
# ANCHOR: see bench/h100-attn-run.sh. BUILD (and VARIANT, another build whose Qwen table and
# profile come after BUILD's) holds moetile, optionally .xz-compressed.
# Writes $OUT/{gpu.txt,profile.md,tune.txt,tuning.json,tables.md,llama.md}.
A=$1 B=$2 V=$3
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for d in "$B" $V; do for z in "$d"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$d"/*; done
setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
M=/tmp/q30.gguf D=/tmp/ds6.gguf
export XDG_CACHE_HOME=/tmp/cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout 150 "$B/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
timeout 100 "$B/moetile" synth --preset ds4-flash-moe --quant iq2_xxs-q2_k --layers 6 -o $D --force | tail -1
timeout 60 "$B/moetile" profile -m $M -p 512 -n 8 >"$OUT/profile.md" 2>&1
grep -E "per decode step|dispatches" "$OUT/profile.md" | head -4
s=$(date +%s%N)
timeout 120 "$B/moetile" tune -m $M >"$OUT/tune.txt" 2>&1; echo "rc=$?" >>"$OUT/tune.txt"
echo "wall_ms=$(( ($(date +%s%N) - s) / 1000000 ))" | tee -a "$OUT/tune.txt"
tail -4 "$OUT/tune.txt"
cp /tmp/cache/moetile/tuning.json "$OUT/" 2>/dev/null
{ echo "## qwen3-30b-a3b q4_k_m, tuned cap"
  timeout 60 "$B/moetile" bench -m $M -p 512 -n 128 -r 3 --output md 2>&1
  echo "## ds4-flash-moe iq2_xxs-q2_k 6 layers, default cap"
  timeout 90 "$B/moetile" bench -m $D -p 2048 -n 32 -r 3 --output md 2>&1; } >"$OUT/tables.md"
[ -n "$V" ] && { echo "## variant $(basename "$V"): qwen3-30b-a3b q4_k_m, tuned cap"
  timeout 60 "$V/moetile" bench -m $M -p 512 -n 128 -r 3 --output md 2>&1
  echo "## variant $(basename "$V") profile"
  timeout 60 "$V/moetile" profile -m $M -p 512 -n 8 2>&1; } >>"$OUT/tables.md"
grep -E "##|pp|tg|note|per decode step" "$OUT/tables.md"
for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
tail -1 /tmp/llbuild.log
L=/tmp/ll/llama.cpp/build/bin/llama-bench
{ timeout 60 $L -m $M -p 512 -n 128 -r 3 -ngl 99 -o md 2>&1
  timeout 90 $L -m $D -p 2048 -n 32 -r 3 -ngl 99 -o md 2>&1; } >"$OUT/llama.md"
grep -E "pp|tg" "$OUT/llama.md"
