#!/bin/bash
# Issues 13, 15, 16: one moetile build and llama.cpp CUDA on the synthetic files of the newer
# architectures, each pair on the same file in one call (~500 s on the H100): llama.cpp builds
# in the background while moetile writes and times every file, then times them itself. A model
# is skipped when the call is short of time.
# Usage (on the device, repository root, Vulkan loader unpacked):
#   bench/h100-models-run.sh ANCHOR BUILD   (BUILD holds moetile, optionally .xz)
# Writes $OUT/{gpu.txt,NAME.md,NAME-llama.md} per model.
A=$1 B=$2
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for z in "$B"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$B"/*
L=/tmp/ll/llama.cpp/build/bin
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
# name, synth arguments: moetile writes and times each file, kept for llama.cpp after
moetile_on() {
  local name=$1; shift
  [ $SECONDS -lt 380 ] || { echo "$name: skipped, no time left"; return; }
  timeout 150 "$B/moetile" synth "$@" -o /tmp/$name.gguf --force | tail -1
  timeout 90 "$B/moetile" bench -m /tmp/$name.gguf -p 512 -n 128 -r 2 --output md \
    >"$OUT/$name.md" 2>&1
  echo "$name: $(grep -hE 'pp512|tg128' "$OUT/$name.md" | tr '\n' ' ')"
}
moetile_on gpt-oss-20b --preset gpt-oss-20b --quant mxfp4
moetile_on qwen3.6-35b-a3b --preset qwen3.6-35b-a3b --quant q4_k_m
moetile_on ds4-flash-8 --preset ds4-flash --quant iq2_xxs-q2_k --layers 8
for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
tail -1 /tmp/llbuild.log
for f in /tmp/*.gguf; do
  name=$(basename "$f" .gguf)
  [ $SECONDS -lt 540 ] || { echo "$name llama: skipped, no time left"; continue; }
  timeout 60 $L/llama-bench -m "$f" -p 512 -n 128 -r 2 -ngl 99 -o md >"$OUT/$name-llama.md" 2>&1
  echo "$name llama: $(grep -hE 'pp512|tg128' "$OUT/$name-llama.md" | tr '\n' ' ')"
done
