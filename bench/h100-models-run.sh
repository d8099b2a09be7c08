#!/bin/bash
# Issues 13, 15, 16: one moetile build and llama.cpp CUDA on the synthetic files of the newer
# architectures, each pair on the same file in one call (~500 s on the H100): llama.cpp builds
# in the background while moetile runs; each model is written, timed by moetile, then by
# llama.cpp (once built), and removed. A model is skipped when the call is short of time.
# Usage (on the device, repository root, Vulkan loader unpacked):
#   bench/h100-models-run.sh ANCHOR BUILD   (BUILD holds moetile, optionally .xz)
# Writes $OUT/{gpu.txt,NAME.md,NAME-llama.md} per model.
A=$1 B=$2
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for z in "$B"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$B"/*
L=/tmp/ll/llama.cpp/build/bin M=/tmp/model.gguf
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
# name, seconds the model needs, synth arguments
model() {
  local name=$1 need=$2; shift 2
  [ $SECONDS -lt $((570 - need)) ] || { echo "$name: skipped, no time left"; return; }
  rm -f $M
  timeout 150 "$B/moetile" synth "$@" -o $M --force | tail -1
  timeout 90 "$B/moetile" bench -m $M -p 512 -n 128 -r 2 --output md >"$OUT/$name.md" 2>&1
  for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
  timeout 90 $L/llama-bench -m $M -p 512 -n 128 -r 2 -ngl 99 -o md >"$OUT/$name-llama.md" 2>&1
  echo "$name: $(grep -hE 'pp512|tg128' "$OUT/$name.md" "$OUT/$name-llama.md" | tr '\n' ' ')"
}
model gpt-oss-20b 170 --preset gpt-oss-20b --quant mxfp4
model qwen3.6-35b-a3b 200 --preset qwen3.6-35b-a3b --quant q4_k_m
model ds4-flash-8 150 --preset ds4-flash --quant iq2_xxs-q2_k --layers 8
tail -1 /tmp/llbuild.log
