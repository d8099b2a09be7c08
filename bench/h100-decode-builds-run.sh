#!/bin/bash
# Issue 11/12 decode and prefill comparison (bench/NOTES-decode.md, runs 9 and 10): builds side by
# side on one synthetic Qwen3-30B-A3B (q4_k_m), then llama.cpp CUDA on the same file in the same
# call (~330 s on the H100 for two builds): llama.cpp builds (low priority) while the stage
# profiles and kernel rows run, after the timed benches. The SM clock is sampled every 100 ms
# through the whole call (clocks.csv).
# With ABLATE=DIR (a build with bench/ablate-twice.patch), each decode kernel in turn runs twice
# (MOETILE_ABLATE_TWICE=name prefix): the tg128 change is that kernel's marginal cost in the step
# (beside the llama.cpp build: compare its rows with its own `none` row only).
# Usage (on the device, repository root, Vulkan loader unpacked):
#   bench/h100-decode-builds-run.sh ANCHOR BUILD...; each build folder holds moetile and
#   optionally kernel_bench (either may be .xz); the first is the base, the last the newest.
# Writes $OUT/{gpu.txt,clocks.csv,BUILD.md,profile-NEWEST.md,kernels.csv,llama.md,ablate.md,
#   llama-kernels*.csv}.
A=$1; shift
BUILDS=("$@") NEW=${!#}
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
for d in "${BUILDS[@]}"; do for z in "$d"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$d"/*; done
M=/tmp/q30.gguf L=/tmp/ll/llama.cpp/build/bin
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,utilization.gpu --format=csv \
  -lms 100 >"$OUT/clocks.csv" 2>/dev/null &
timeout 150 "$NEW/moetile" synth --preset qwen3-30b-a3b --quant q4_k_m -o $M --force | tail -1
for b in "${BUILDS[@]}"; do
  n=$(basename "$b")
  echo "## $n start $(date +%T.%N)" >>"$OUT/clocks-marks.txt"
  timeout 70 "$b/moetile" bench -m $M -p 512 -n 128 -r 3 --output md >"$OUT/$n.md" 2>&1
  echo "$n: $(grep -E 'pp512|tg128' "$OUT/$n.md" | tr '\n' ' ')"
done
setsid nice -n 19 bash "$A/llama-anchor.sh" build "$A" >/tmp/anchor.out 2>&1 </dev/null &
if [ -n "${ABLATE:-}" ]; then
  for z in "$ABLATE"/*.xz; do [ -e "$z" ] && xz -dkf "$z"; done; chmod +x "$ABLATE"/*
  for k in none attn_input attn_decode attn_combine route mv_id_f32 mv_id_q mv_glu mv_sum; do
    MOETILE_ABLATE_TWICE=$k timeout 40 "$ABLATE/moetile" bench -m $M -p 16 -n 128 -r 2 --output md \
      2>&1 | grep -E '^\| *tg128' | sed "s/^/$k /" | tee -a "$OUT/ablate.md"
  done
fi
n=$(basename "$NEW")
timeout 45 "$NEW/moetile" profile -m $M -p 512 -n 8 >"$OUT/profile-$n.md" 2>&1
echo "$n: $(grep -E 'per decode step' "$OUT/profile-$n.md")"
[ -x "$NEW/kernel_bench" ] && timeout 60 "$NEW/kernel_bench" shape=all tokens=32 mv_tokens=1 \
  weights=q4k tiles=64 paths=coop16 >"$OUT/kernels.csv" 2>&1
[ -x "$NEW/kernel_bench" ] && timeout 30 "$NEW/kernel_bench" shape=router tokens=512 mv_tokens=1 \
  weights=f32 tiles=32,64,128 paths=reg 2>&1 | grep router >>"$OUT/kernels.csv"
for i in $(seq 60); do grep -q "BUILD rc" /tmp/llbuild.log 2>/dev/null && break; sleep 5; done
tail -1 /tmp/llbuild.log
echo "## llama start $(date +%T.%N)" >>"$OUT/clocks-marks.txt"
timeout 90 $L/llama-bench -m $M -p 512 -n 128 -r 3 -ngl 99 -o md >"$OUT/llama.md" 2>&1
tail -4 "$OUT/llama.md"
# llama.cpp's decode kernels one by one (CUDA only: nsys traces Vulkan per submission, not per
# dispatch), where the toolkit has nsys: what each of its ~25 kernels a layer costs.
NSYS=$(ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)
if [ -n "$NSYS" ]; then
  timeout 60 "$NSYS" profile -t cuda -o /tmp/lltrace -f true $L/llama-bench -m $M -p 0 -n 32 -r 1 \
    -ngl 99 >/dev/null 2>&1
  timeout 40 "$NSYS" stats -q -r cuda_gpu_kern_sum -f csv -o "$OUT/llama-kernels" /tmp/lltrace.nsys-rep \
    >/dev/null 2>&1
  ls "$OUT"/llama-kernels* 2>/dev/null
fi
