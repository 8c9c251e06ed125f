#!/usr/bin/env bash
# The GPU benchmarks as they were run for bench/results/, in two parts that each fit a
# 10-minute slot on a two-GPU machine. Results land in $OUT (default bench/results/new).
#
#   bench/gpu_suite.sh segment # one 121-frame segment under 8 GiB / 32 GiB (one GPU)
#   bench/gpu_suite.sh chain   # 3 chained 121-frame segments, capped and uncapped in one run (one GPU)
#   bench/gpu_suite.sh fit     # GPU 0: one 121-frame segment under 8 GiB / 32 GiB, ESRGAN vs compiled spandrel
#                              # GPU 1: every draft family at full size under the seed's 12 GB recipes
#   bench/gpu_suite.sh ray [local|ray_1gpu|ray_2gpu]   # 4 chained segments, one engine per call:
#                              # the single worker, Ray on GPU 0, Ray on GPUs 0,1 (BASELINE=the local JSON)
#   bench/gpu_suite.sh published # one GPU, < 9 min: a full-size LTX-2.3 random stack written to disk in the
#                              # published formats (GGUF + diffusers folder + upsampler + LoRA + x2plus), then one
#                              # 121-frame ltx23-distilled segment from those files under 8 GiB / 32 GiB, and
#                              # `sulphur models verify` on them (issue 17; issue 20's cold start)
#   bench/gpu_suite.sh anchored  # ~4 min: the chain uncapped with shot 1 anchored on a still (every shot
#                              # image-to-video): are segment 1's steps faster for being text-to-video?
#   bench/gpu_suite.sh contention # ~3 min: a resident Q4_0 step alone and beside the work behind the GPU
#                              # stages (x264, flicker analysis, pure Python), lanes kept off one core or not
#   bench/gpu_suite.sh launch  # ~2 min: is a resident step GPU- or host-bound? (profile, syncs, a CUDA graph)
#   bench/gpu_suite.sh threads # ~5 min: the chain uncapped with x264 at its default threads, then at 6
#   bench/gpu_suite.sh next    # < 10 min, one call: the GPU tests of the graphs, `published` (goal 3),
#                              # the chain capped and uncapped (what runs 17-18 left to measure)
#   bench/gpu_suite.sh then    # < 10 min: Ray on one GPU vs the local engine (goal 5), ESRGAN max-autotune (goal 6)
#   bench/gpu_suite.sh graphs  # ~4 min: the chain uncapped, steps as CUDA graphs and all eager (graphs_speedup)
#   bench/gpu_suite.sh determinism # ~7 min: the Ray film against the local one (audio decode per process
#                              # variant; 2 x 121 frames local and Ray, cache entries compared)
#   bench/gpu_suite.sh reference # ~1 min: a bare resident step against one with a render's inputs (issue 20)
#   bench/gpu_suite.sh encode  # ~15 s: how many cores x264 gets for one 1080p segment (bench/encode.py)
#   bench/gpu_suite.sh tests   # the tests CI skips for want of a GPU (CUDA offload plans, VRAM
#                              # samples and OOM fallback in a real worker, ESRGAN on CUDA)
#   bench/gpu_suite.sh recheck # two GPUs, ~7 min: the segment bench on GPU 0, then Ray on GPUs 0,1 against
#                              # the committed single-worker run (what stop 14 left to re-measure);
#                              # that run was on H200s: on H100s, run `ray local` as well and compare with it
#
# Missing Python packages travel in .site/site.tar.xz: build it with bench/device_site.sh and
# name .site in the device call's carry.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/new}
mkdir -p "$OUT"
if [ -f .site/site.tar.xz ] && [ ! -d /tmp/site/diffusers ]; then
    mkdir -p /tmp/site && tar -C /tmp/site -xJf .site/site.tar.xz
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 SULPHUR_HOME=${SULPHUR_HOME:-/tmp/sulphur-home}
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader

case "${1:-fit}" in
segment)  # one GPU is enough: the whole-segment bench alone (~4 min)
    timeout 500 python bench/segment_budget.py --frames 121 --vram-budget-gb 8 --ram-budget-gb 32 \
        --out "$OUT/segment_budget.json" >/dev/null 2>"$OUT/segment.log" || echo "segment failed: $?"
    ;;
chain)  # one GPU, < 9 min: 3 chained 121-frame segments capped (8/32) and uncapped, + resident steps (issue 20)
    timeout 540 python bench/chain.py --segments 3 --frames 121 --out "$OUT/chain.json" >/dev/null \
        2>"$OUT/chain.log" || echo "chain failed: $?"
    ;;
anchored)
    timeout 400 python bench/chain.py --segments 3 --frames 121 --uncapped-only --first-anchor image \
        --out "$OUT/chain_anchored.json" >/dev/null 2>"$OUT/chain_anchored.log" || echo "anchored failed: $?"
    ;;
published)  # Gemma capped at 12 of 48 text layers: see "departures" in the JSON for why
    df -h /tmp | tail -1
    timeout 560 python bench/published_stack.py --text-layers 12 --budget-s 540 --root /tmp/published-stack \
        --out "$OUT/published_stack.json" >/dev/null 2>"$OUT/published.log" || echo "published failed: $?"
    rm -rf /tmp/published-stack
    ;;
fit)
    (
        for p in wan22-ti2v-5b svd-xt ltxv-0.9 cogvideox-5b-i2v; do
            CUDA_VISIBLE_DEVICES=1 timeout 150 python bench/family_fit.py --preset "$p" --out "$OUT/family_fit_$p.json" \
                >/dev/null 2>>"$OUT/family.log" || echo "$p failed: $?" >>"$OUT/family.log"
        done
    ) &
    (
        CUDA_VISIBLE_DEVICES=1 timeout 420 python bench/family_fit.py --preset wan22-i2v-a14b-gguf \
            --out "$OUT/family_fit_wan22-i2v-a14b-gguf.json" >/dev/null 2>>"$OUT/family_a14b.log" \
            || echo "a14b failed: $?" >>"$OUT/family_a14b.log"
    ) &
    CUDA_VISIBLE_DEVICES=0 timeout 330 python bench/segment_budget.py --frames 121 --vram-budget-gb 8 \
        --ram-budget-gb 32 --out "$OUT/segment_budget.json" >/dev/null 2>"$OUT/segment.log" || echo "segment failed: $?"
    pkill -f "pipeline.cli.main render" || true  # a render outliving its timed-out bench would hold GPU 0
    [ -n "${SKIP_ESRGAN:-}" ] || CUDA_VISIBLE_DEVICES=0 timeout 420 python bench/esrgan.py --budget-s 345 >"$OUT/esrgan.json" \
        2>"$OUT/esrgan.log" || echo "esrgan failed: $?"
    wait
    ;;
encode)
    timeout 120 python bench/encode.py --frames 121 --out "$OUT/encode.json" >/dev/null 2>"$OUT/encode.log" \
        || echo "encode failed: $?"
    ;;
contention)
    timeout "${LIMIT:-240}" python bench/step_contention.py --out "$OUT/step_contention.json" >/dev/null \
        2>"$OUT/contention.log" || echo "contention failed: $?"
    ;;
launch)
    timeout "${LIMIT:-240}" python bench/step_launch.py --out "$OUT/step_launch.json" >/dev/null \
        2>"$OUT/launch.log" || echo "launch failed: $?"
    ;;
threads)  # the default first: it warms the machine's caches, which cost run 14 its 6-thread arm
    for t in 0 6; do
        timeout 240 python bench/chain.py --segments 3 --frames 121 --uncapped-only --encode-threads "$t" \
            --out "$OUT/chain_threads$t.json" >/dev/null 2>"$OUT/chain_threads$t.log" || echo "threads $t failed: $?"
    done
    ;;
next)  # what session 12 left unmeasured (bench/results/README.md, runs 17-18): the GPU tests of the
    # graphs' refusals and shared pool, goal 3 with the mapped GGUF and the LoRA read per part, the
    # capped + uncapped chain with the one-step-late preview (goals 1, 2a, 2b, 4)
    timeout 60 python -m pytest -q -p no:cacheprovider -m gpu -rs tests/unit/test_cuda_graphs.py \
        tests/unit/test_latent_previewer.py >"$OUT/cuda_tests.log" 2>&1 || echo "tests failed: $?"
    timeout 280 python bench/published_stack.py --text-layers 12 --budget-s 275 --root /tmp/published-stack \
        --out "$OUT/published_stack.json" >/dev/null 2>"$OUT/published.log" || echo "published failed: $?"
    rm -rf /tmp/published-stack
    timeout 240 python bench/chain.py --segments 3 --frames 121 --out "$OUT/chain.json" >/dev/null \
        2>"$OUT/chain.log" || echo "chain failed: $?"
    ;;
graphs)  # ~4 min: the chain uncapped with its steps replayed as CUDA graphs, then all eager (what they are worth)
    timeout 330 python bench/chain.py --segments 3 --frames 121 --uncapped-only --eager-arm \
        --out "$OUT/chain_graphs.json" >/dev/null 2>"$OUT/chain_graphs.log" || echo "graphs failed: $?"
    ;;
then)  # the call after: Ray on one GPU against the local engine (goal 5), ESRGAN's untried candidate (goal 6)
    timeout 280 python bench/ray_pipeline.py --preset ltx2-19b-random --segments 3 --frames 121 \
        --vram-budget-gb 8 --no-enhance --run local=local@0 --run ray_1gpu=ray@0 --out "$OUT/ray_1gpu.json" \
        2>"$OUT/ray.log" >/dev/null || echo "ray failed: $?"
    timeout 300 python bench/esrgan.py --candidates blocks_wide,wide_max_autotune,wide_reduce_overhead \
        --no-warm-probes --budget-s 290 \
        >"$OUT/esrgan.json" 2>"$OUT/esrgan.log" || echo "esrgan failed: $?"
    ;;
determinism)  # ~7 min: is the Ray film the local one on a GPU (bench/results, runs 21-22)? The audio
    # decode per process variant, then 2 x 121 frames local against Ray (a finish actor beside the
    # draft actor), every cache entry compared
    timeout 200 python bench/audio_determinism.py --out "$OUT/audio_determinism.json" >/dev/null \
        2>"$OUT/audio_determinism.log" || echo "audio_determinism failed: $?"
    timeout 360 python bench/ray_pipeline.py --preset ltx2-19b-random --segments 2 \
        --frames 121 --vram-budget-gb 8 --no-enhance --run local=local@0 --run ray_1gpu=ray@0 \
        --out "$OUT/ray_determinism.json" 2>"$OUT/ray_determinism.log" >/dev/null || echo "ray_determinism failed: $?"
    ;;
reference)
    timeout 300 python bench/reference_step.py --out "$OUT/reference_step.json" >/dev/null 2>"$OUT/reference.log" \
        || echo "reference failed: $?"
    ;;
tests)
    python -m pytest -q -p no:cacheprovider -rs tests/functional/test_worker_gpu.py \
        tests/functional/test_draft_refine.py tests/unit/test_upscale.py tests/unit/test_offload.py \
        tests/functional/test_shot_loras_audio.py tests/unit/test_resident_while_working.py \
        2>&1 | tee "$OUT/cuda_tests.log" | tail -15
    ;;
recheck)
    CUDA_VISIBLE_DEVICES=0 timeout 240 python bench/segment_budget.py --frames 121 --vram-budget-gb 8 \
        --ram-budget-gb 32 --out "$OUT/segment_budget.json" >/dev/null 2>"$OUT/segment.log" || echo "segment failed: $?"
    pkill -f "pipeline.cli.main render" || true
    timeout 330 python bench/ray_pipeline.py --preset ltx2-19b-random --segments 4 --frames 49 --vram-budget-gb 8 \
        --no-enhance --run ray_2gpu=ray@0,1 \
        --baseline bench/results/ray_pipeline_ltx2-19b-random_h200x2_2026-11-27_local.json \
        --out "$OUT/ray_ray_2gpu.json" 2>"$OUT/ray_ray_2gpu.log" >/dev/null || echo "ray ray_2gpu failed: $?"
    ;;
ray)
    # One engine per call (each took minutes on the full-size stack): `ray local`, then
    # `ray ray_1gpu` and `ray ray_2gpu`, each compared with the local run's JSON.
    run=${2:-local}
    spec=$(case "$run" in local) echo local=local@0 ;; ray_1gpu) echo ray_1gpu=ray@0 ;; *) echo ray_2gpu=ray@0,1 ;; esac)
    base=()
    [ "$run" != local ] && [ -f "${BASELINE:-$OUT/ray_local.json}" ] && base=(--baseline "${BASELINE:-$OUT/ray_local.json}")
    timeout 560 python bench/ray_pipeline.py --preset ltx2-19b-random --segments 4 --frames 49 --vram-budget-gb 8 \
        --no-enhance --run "$spec" "${base[@]}" --out "$OUT/ray_$run.json" 2>"$OUT/ray_$run.log" >/dev/null \
        || echo "ray $run failed: $?"
    ;;
esac
ls -la "$OUT"
