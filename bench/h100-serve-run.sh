#!/bin/bash
# Issue 14: `moetile serve`'s aggregate decode at 1, 4, 16 and 64 concurrent streams on the
# synthetic Qwen3-30B-A3B (q4_k_m), next to llama.cpp CUDA's llama-batched-bench on the same
# file in the same call (bench/NOTES-serve.md; ~6 min on the H100, at most ~9). llama.cpp builds
# (low priority) while the model is synthesized and the server loads it; the timed runs start
# once the build is over (at 330 s at the latest), so it does not compete with them for the CPU.
# Usage (on the device, repository root, Vulkan loader unpacked): bench/h100-serve-run.sh
#   ANCHOR BUILD; ANCHOR holds llama-anchor.sh and llama-src.tar.xz (its `build` step makes
#   llama-batched-bench), BUILD holds moetile (optionally moetile.xz).
# Prepared here:  cargo build --release -p moetile-cli && mkdir -p .gpu/serve &&
#   xz -c target/release/moetile >.gpu/serve/moetile.xz   (.anchor and .gl as for the other runs)
# Device call (carry .gl, .anchor, .gpu/serve):
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; bench/h100-serve-run.sh .anchor .gpu/serve
# Writes $OUT/{gpu.txt,serve.md,serve.csv,serve.log,llama.md}.
A=$1 B=$2
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for z in "$B"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$B"/*
M=/tmp/q30.gguf PORT=18080
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
timeout 150 "$B/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
# 64 slots of 512 tokens (a 128-token prompt and 128 generated fit): 64 x 48 MiB of f16 KV cache.
"$B/moetile" serve -m $M --port $PORT --parallel 64 --ctx 512 >"$OUT/serve.log" 2>&1 &
S=$!
# Waits for the llama.cpp build, until $1 seconds into the script at most (the call stays in ~540 s).
built() { until grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null || [ $SECONDS -ge $1 ]; do sleep 5; done; }
built 330; tail -1 /tmp/llbuild.log
timeout 120 "$B/moetile" bench serve --url http://127.0.0.1:$PORT --streams 1,4,16,64 \
  --prompt-tokens 128 --max-tokens 128 --wait 60 --csv "$OUT/serve.csv" 2>&1 | tee "$OUT/serve.md"
kill $S; wait $S 2>/dev/null
built 450
# Each of the 64 sequences holds 128 + 128 tokens in its share of the context (-c / 64).
timeout 90 /tmp/ll/llama.cpp/build/bin/llama-batched-bench -m $M -c 20480 -npp 128 -ntg 128 \
  -npl 1,4,16,64 -ngl 99 -fa auto >"$OUT/llama.md" 2>&1
tail -7 "$OUT/llama.md"
