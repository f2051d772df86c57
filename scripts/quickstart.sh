#!/usr/bin/env bash
# The main job, end to end, on Fashion-MNIST (6-9 minutes on 2 CPU cores once torch is installed):
#   set up .venv -> get the data -> train an AutoSlim supernet (ResNet-20, 16x16 input, 3 epochs
#   on the full training set) -> greedy search for two MACs budgets -> export the child of one
#   budget (PyTorch, TorchScript, ONNX) -> evaluate supernet widths, searched configs and the child.
#
# QUICKSTART_SMOKE=1 runs a reduced version (tiny subset, one epoch) used by the test suite.
# QUICKSTART_OUT=DIR changes the output folder (default checkpoints/quickstart).
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"

OUT="${QUICKSTART_OUT:-checkpoints/quickstart}"
CONFIG=configs/fashion_mnist/quickstart.yaml
OVERRIDES=("experiment.output_dir=$OUT")
SEARCH=(--flops 7.3M --flops 5M)    # 7.3M: the MACs of uniform width 0.75; 5M: between widths 0.6 (6.8M) and 0.5 (2.5M)
CALIB=()     # BN calibration images for export / evaluate (default 2000)
TEST=()      # test images evaluated (default: all 10,000)
DATA=(--data fashion_mnist)
if [ "${QUICKSTART_SMOKE:-0}" = 1 ]; then
    OVERRIDES+=(data.subset=96 data.heldout_size=64 data.test_subset=64 data.batch_size=32
                train.epochs=1 eval.calib_images=64 train.checkpoint_every=0)
    SEARCH=(--flops 9.5M --flops 9M)
    CALIB=(--calibrate-images 64)
    TEST=(--test-subset 64)
fi
if ! ensure_fashion_mnist; then
    echo "[quickstart] Debian's dataset-fashion-mnist is not available: downloading with torchvision"
    OVERRIDES+=(data.download=true data.root=data)
    DATA=(--data fashion_mnist --data-root data)
fi

step() { printf '\n==> %s\n' "$*"; }

step "1/4 train an AutoSlim supernet ($CONFIG -> $OUT)"
"$PY" tools/train.py --config "$CONFIG" "${OVERRIDES[@]}"

step "2/4 greedy channel search: ${SEARCH[*]}"
"$PY" tools/autoslim.py --checkpoint "$OUT/best.pt" "${SEARCH[@]}"

FIRST_BUDGET=$(ls "$OUT"/autoslim_*.json | grep -v -e state -e trajectory | head -n 1)
step "3/4 export the child of $(basename "$FIRST_BUDGET")"
"$PY" tools/export.py --checkpoint "$OUT/best.pt" --channels "$FIRST_BUDGET" --out "$OUT/child" \
    --torchscript --onnx "${CALIB[@]}"

step "4/4 evaluate on the test split"
BUDGETS=()
for f in "$OUT"/autoslim_*.json; do
    case "$f" in *state*|*trajectory*) ;; *) BUDGETS+=(--channels "$f") ;; esac
done
"$PY" tools/evaluate.py --checkpoint "$OUT/best.pt" --width 1.0 --width 0.75 --width 0.6 --width 0.5 --width 0.35 \
    "${BUDGETS[@]}" --plot "$OUT/accuracy_vs_macs.png" --json "$OUT/evaluation.json" "${CALIB[@]}" "${TEST[@]}"
"$PY" tools/evaluate.py --child "$OUT/child/child.pt" "${DATA[@]}" "${TEST[@]}"

cat <<EOF

Done. Files:
  $OUT/best.pt, last.pt          supernet checkpoints (config.yaml, metrics.jsonl, TensorBoard events beside them)
  $OUT/autoslim_*.json           one channel config per budget (+ autoslim_trajectory.jsonl/.csv/.png)
  $OUT/child/                    the exported child: child.pt (slimnet.load_child), child.json, child.ts, child.onnx
  $OUT/evaluation.json, accuracy_vs_macs.png   test accuracy of widths and searched configs
TensorBoard: .venv/bin/tensorboard --logdir $OUT
EOF
