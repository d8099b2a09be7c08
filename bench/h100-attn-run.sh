#!/bin/bash
# One device call for issue 11's attention and router stages (bench/NOTES-decode.md): builds
# side by side on one synthetic Qwen3-30B-A3B (q4_k_m), each timed end to end (llama-bench
# style tg128) and profiled per stage at a 512- and a 4096-token context, then llama.cpp CUDA's
# llama-bench on the same file when its build (started after the kernel bench, at low
# priority) is done.
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-attn-run.sh ANCHOR BUILD...
# ANCHOR holds llama-anchor.sh and llama-src.tar.xz (../shared/gpu/llama-anchor.sh pack), or
# is - to leave llama.cpp out. Each BUILD folder holds moetile, optionally .xz-compressed.
# A BUILD holding kernel_bench also gets the mat-vec rows of the kernel bench.
# Writes $OUT/{gpu.txt,kernels.csv,tables.md,profiles.md,llama.md} (few files: a device call
# returns a limited number).
A=$1; shift
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for d in "$@"; do for z in "$d"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$d"/*; done
M=/tmp/q30.gguf
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout 150 "$1/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
for b in "$@"; do
  [ -x "$b/kernel_bench" ] || continue
  echo "# build $(basename "$b")" >>"$OUT/kernels.csv"
  timeout 100 "$b/kernel_bench" shape=all tokens=32 mv_tokens=1 weights=q8_0,q4k,q2k,iq2xxs \
    tiles=64 paths=coop16 >>"$OUT/kernels.csv" 2>&1
  grep -E "^mv_" "$OUT/kernels.csv" | cut -d, -f1-7
done
# The anchor build starts after the kernel bench: while it ran alongside (run 5), kernel rows
# came out 2-4x slower than alone.
[ "$A" != - ] && setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
for b in "$@"; do
  n=$(basename "$b")
  timeout 90 "$b/moetile" bench -m $M -p 512 -n 128 -r 3 --output md >/tmp/table.md 2>&1
  { echo "## build $n"; cat /tmp/table.md; } >>"$OUT/tables.md"
  echo "$n $(grep tg128 /tmp/table.md | tail -1)"
done
for b in "$@"; do
  n=$(basename "$b")
  for p in 512 4096; do
    timeout 60 "$b/moetile" profile -m $M -p $p -n 8 >/tmp/profile.md 2>&1
    { echo "## build $n, $p-token prompt"; cat /tmp/profile.md; } >>"$OUT/profiles.md"
    echo "$n p$p $(grep -E "per decode step" /tmp/profile.md)"
    sed -n '/decode steps/,$p' /tmp/profile.md | grep -E "attention|router" | head -8
  done
done
[ "$A" = - ] && exit 0
for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
tail -1 /tmp/llbuild.log
timeout 120 /tmp/ll/llama.cpp/build/bin/llama-bench -m $M -p 512 -n 128 -r 3 -ngl 99 -o md >"$OUT/llama.md" 2>&1
tail -4 "$OUT/llama.md"
