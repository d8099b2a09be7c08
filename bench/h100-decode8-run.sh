#!/bin/bash
# One device call for issue 11's run 8 (bench/NOTES-decode.md): builds side by side on one
# synthetic Qwen3-30B-A3B (q4_k_m), most telling first (the call may run out of time):
# llama-bench style tg128 of every build, then (while llama.cpp CUDA builds at low priority)
# a stage profile of the last build and BASE at 512 and 4096 tokens, the kernel bench's q4_K
# mat-vec rows of the first build that has kernel_bench, and llama.cpp's llama-bench on the
# same file.
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-decode8-run.sh ANCHOR BASE BUILD...
# ANCHOR: see bench/h100-attn-run.sh (- leaves llama.cpp out). Each build folder holds
# moetile (and optionally kernel_bench), optionally .xz-compressed.
# Writes $OUT/{gpu.txt,kernels.csv,tables.md,profiles.md,llama.md}.
A=$1; shift
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for d in "$@"; do for z in "$d"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$d"/*; done
M=/tmp/q30.gguf
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout 150 "${@: -1}/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
for b in "$@"; do
  n=$(basename "$b")
  timeout 70 "$b/moetile" bench -m $M -p 512 -n 128 -r 3 --output md >/tmp/table.md 2>&1
  { echo "## build $n"; cat /tmp/table.md; } >>"$OUT/tables.md"
  echo "$n $(grep tg128 /tmp/table.md | tail -1)"
done
[ "$A" != - ] && setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
for b in "${@: -1}" "$1"; do
  n=$(basename "$b")
  for p in 512 4096; do
    timeout 45 "$b/moetile" profile -m $M -p $p -n 8 >/tmp/profile.md 2>&1
    { echo "## build $n, $p-token prompt"; cat /tmp/profile.md; } >>"$OUT/profiles.md"
    echo "$n p$p $(grep -E "per decode step" /tmp/profile.md)"
    sed -n '/decode steps/,$p' /tmp/profile.md | grep -E "attention/|router|experts" | head -8
  done
done
for b in "$@"; do
  [ -x "$b/kernel_bench" ] || continue
  timeout 60 "$b/kernel_bench" shape=all tokens=32 mv_tokens=1 weights=q4k tiles=64 paths=coop16 \
    >"$OUT/kernels.csv" 2>&1
  grep -E "^mv_" "$OUT/kernels.csv" | cut -d, -f1-7
  break
done
[ "$A" = - ] && exit 0
for i in $(seq 50); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
tail -1 /tmp/llbuild.log
timeout 90 /tmp/ll/llama.cpp/build/bin/llama-bench -m $M -p 512 -n 128 -r 3 -ngl 99 -o md >"$OUT/llama.md" 2>&1
tail -4 "$OUT/llama.md"
