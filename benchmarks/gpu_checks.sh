#!/usr/bin/env bash
# Everything rlgen measures on a lent GPU, in one call that fits a short lease: the CUDA tests, the DQN
# benchmark (fp32 and bf16), the update under each precision, layout and compilation, the Breakout job's
# own SPS, the VAE throughput benchmark, the GAN seeds comparison.
# Expects Python wheels of the packages the GPU image lacks in .whl/ and MNIST in $RLGEN_DATA/mnist;
# writes each figure's JSON and log under $OUT. Every stage has its own time limit; the GAN seeds get what
# is left of DEADLINE seconds (570: a call may run 600).
set -u
START=$(date +%s)
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/rlgen-gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 RLGEN_DATA=${RLGEN_DATA:-$PWD/.gpudata}
stage() { echo "== $1 ($(date -u +%T))"; }

stage "machine"
nvidia-smi -L; nproc
python3 -c "import torch, ale_py; print('torch', torch.__version__, torch.cuda.get_device_name(), 'ale_py', ale_py.__version__)"

stage "CUDA tests"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/core/test_replay_memory.py tests/core/test_replay_nstep.py \
    tests/core/test_replay_prioritized.py tests/core/test_device.py tests/core/test_sampling.py 2>&1 | tail -4

stage "dqn_sps"
timeout 150 python3 benchmarks/dqn_sps.py --device cuda --rounds 3 --loop-seconds 5 | tee "$OUT/dqn_sps.json"

stage "update_variants"
timeout 120 python3 benchmarks/update_variants.py --device cuda --rounds 3 --skip fp32_channels_last_compiled | tee "$OUT/update_variants.json"

stage "dqn_breakout.yaml"
timeout -s KILL "${BREAKOUT_SECONDS:-80}" python3 -m core.cli run experiments/dqn_breakout.yaml train.learning_starts=20000 run.eval_every=10000000 \
    run.checkpoint_every=10000000 run.root=/tmp/rlgen-runs name=gpu_breakout > /dev/null 2>&1
cp /tmp/rlgen-runs/gpu_breakout/*/log.txt "$OUT/breakout_log.txt" && grep -o "step [0-9/]*.*sps=[0-9.]*" "$OUT/breakout_log.txt" | tail -3

stage "vae_throughput"
timeout 90 python3 benchmarks/vae_throughput.py --device cuda --rounds 3 | tee "$OUT/vae_throughput.json"

stage "gan_seeds"
timeout $(( ${DEADLINE:-570} - ($(date +%s) - START) )) python3 benchmarks/gan_seeds.py --device cuda --seeds 1 2 3 --epochs 15 \
    --variant ema=train.ema_decay=0.999 --variant plain= 2> "$OUT/gan_seeds.err" | tee "$OUT/gan_seeds.json"
grep '^{' "$OUT/gan_seeds.err"
stage "done"
