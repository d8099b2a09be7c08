#!/bin/bash
# Device calls for issues 10 and 11 on the H100 (see bench/NOTES-decode.md): two builds side by
# side on one synthetic Qwen3-30B-A3B (q4_k_m), and llama.cpp CUDA on the same file.
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-decode-run.sh 1 NEW BASE ANCHOR   floor probe, synthesis, kernel bench, profiles;
#                                                 starts llama.cpp's build in the background
#   bench/h100-decode-run.sh 2 NEW BASE ANCHOR   first-token times, llama-bench style tables of
#                                                 both builds, then llama.cpp's llama-bench
#   bench/h100-decode-run.sh all NEW BASE ANCHOR  both, in one call (about 6 minutes)
# NEW and BASE hold moetile, kernel_bench and dispatch_floor (optionally .xz-compressed);
# ANCHOR holds llama-anchor.sh and llama-src.tar.xz (../shared/gpu/llama-anchor.sh pack).
# Writes $OUT/{gpu.txt,floor.txt,kernels.csv,profile-*.md} (1),
# $OUT/{first-token.txt,table-*.md,llama.md} (2).
part=$1 N=$2 O=$3 A=$4
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for d in "$N" "$O"; do for z in "$d"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$d"/*; done
M=/tmp/q30.gguf
n=$(basename "$N") o=$(basename "$O")
if [ "$part" != 2 ]; then
  setsid bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
  for k in 200 2000; do timeout 60 "$N/dispatch_floor" $k; done 2>&1 | tee "$OUT/floor.txt"
  timeout 150 "$N/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
  for r in 1 2; do for b in "$O" "$N"; do
    echo "# build $(basename "$b") run $r"
    timeout 90 "$b/kernel_bench" shape=all tokens=512 mv_tokens=1 weights=q4k,iq2xxs tiles=64 paths=coop16
  done; done >"$OUT/kernels.csv" 2>&1
  grep -E "^# build|^mv_id|^mm_id" "$OUT/kernels.csv" | cut -d, -f1-6
  for b in "$O" "$N"; do
    timeout 100 "$b/moetile" profile -m $M -p 512 -n 8 >"$OUT/profile-$(basename "$b").md" 2>&1
    grep -E "decode steps|dispatches" "$OUT/profile-$(basename "$b").md"
  done
fi
if [ "$part" != 1 ]; then
  # Process wall time to the first token: BASE (pipelines created lazily) twice, then NEW with
  # no pipeline cache on disk (cold) and with the one that run saved (warm).
  first() {
    local s e; s=$(date +%s%N)
    timeout 120 "$1/moetile" run -m $M -p "Once upon a time" -n 1 --json >/tmp/r.json 2>/dev/null
    e=$(date +%s%N)
    echo "$2 wall_ms=$(( (e - s) / 1000000 )) $(grep -o '"first_token_ms":[0-9.]*' /tmp/r.json)"
  }
  rm -rf ~/.cache/moetile
  { first "$O" base; first "$O" base; first "$N" cold; first "$N" warm; } | tee "$OUT/first-token.txt"
  for b in "$O" "$N"; do
    timeout 170 "$b/moetile" bench -m $M -p 512 -n 128 -r 3 --output md >"$OUT/table-$(basename "$b").md" 2>&1
    tail -3 "$OUT/table-$(basename "$b").md"
  done
  for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
  tail -1 /tmp/llbuild.log
  timeout 200 /tmp/ll/llama.cpp/build/bin/llama-bench -m $M -p 512 -n 128 -r 3 -ngl 99 -o md >"$OUT/llama.md" 2>&1
  tail -4 "$OUT/llama.md"
fi
