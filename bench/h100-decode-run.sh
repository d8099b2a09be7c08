#!/bin/bash
# One device call for issues 10 and 11 on the H100 (see bench/NOTES-decode.md): builds side by
# side on one synthetic Qwen3-30B-A3B (q4_k_m), and llama.cpp CUDA's llama-bench on the same file.
# Usage (on the device, from the repository root, after unpacking the Vulkan loader):
#   bench/h100-decode-run.sh ANCHOR BUILD...
# ANCHOR holds llama-anchor.sh and llama-src.tar.xz (../shared/gpu/llama-anchor.sh pack), or is
# - to leave llama.cpp out. Each BUILD folder holds moetile and kernel_bench (optionally
# .xz-compressed); the last one also dispatch_floor: it synthesizes the model, runs the floor
# probe and is profiled. Per build, in order: the routed-MoE kernel bench and a llama-bench
# style table; for the last build also the process time to the first token without and with a
# pipeline cache on disk (with load and prepare times; it reads the whole file twice) and a
# stage profile. About 5 minutes for five builds with llama.cpp.
# Writes $OUT/{gpu.txt,floor.txt,kernels.csv,first-token.txt,profile.md,llama.md,table-B.md}.
A=$1; shift
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for d in "$@"; do for z in "$d"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$d"/*; done
[ "$A" != - ] && setsid bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
L=${!#} M=/tmp/q30.gguf
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
for k in 200 2000; do timeout 60 "$L/dispatch_floor" $k; done 2>&1 | tee "$OUT/floor.txt"
timeout 150 "$L/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
first() {
  local s e; s=$(date +%s%N)
  timeout 120 "$1/moetile" run -m $M -p "Once upon a time" -n 1 --json >/tmp/r.json 2>/dev/null
  e=$(date +%s%N)
  echo "$(basename "$1") $2 wall_ms=$(( (e - s) / 1000000 )) $(grep -oE '"(load|prepare|first_token)_ms": *[0-9.]+' /tmp/r.json | tr -d ' \n')"
}
for b in "$@"; do
  n=$(basename "$b")
  echo "# build $n" >>"$OUT/kernels.csv"
  timeout 60 "$b/kernel_bench" shape=all tokens=512 mv_tokens=1 weights=q4k,iq2xxs tiles=64 paths=coop16 >>"$OUT/kernels.csv" 2>&1
  if [ "$b" = "$L" ]; then
    rm -rf ~/.cache/moetile; { first "$b" cold; first "$b" warm; } | tee -a "$OUT/first-token.txt"
  fi
  timeout 120 "$b/moetile" bench -m $M -p 512 -n 128 -r 3 --output md >"$OUT/table-$n.md" 2>&1
  tail -2 "$OUT/table-$n.md"
done
grep -E "^# build|^mv_id|^mm_id" "$OUT/kernels.csv" | cut -d, -f1-6
timeout 60 "$L/moetile" profile -m $M -p 512 -n 8 >"$OUT/profile.md" 2>&1
grep -E "decode steps" "$OUT/profile.md"
[ "$A" = - ] && exit 0
for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
tail -1 /tmp/llbuild.log
timeout 150 /tmp/ll/llama.cpp/build/bin/llama-bench -m $M -p 512 -n 128 -r 3 -ngl 99 -o md >"$OUT/llama.md" 2>&1
tail -4 "$OUT/llama.md"
