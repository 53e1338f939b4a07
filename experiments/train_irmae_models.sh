#!/bin/bash
# Trains the shipped IRMAE models (and, optionally, the plain AE for the effective-rank
# comparison: ./experiments/train_irmae_models.sh ae).
# Resumable: re-running skips finished models (card.md present) and resumes interrupted ones
# from their checkpoint directory (keras BackupAndRestore) at the last completed epoch.
# Epoch counts are sized for the 2 shared CPU cores of the development machine (260 s per epoch of
# full MNIST on a quiet machine, about 30 min while other jobs ran); with more CPU raise them.
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
FULL_EPOCHS=${FULL_EPOCHS:-2}
DIGIT_EPOCHS=${DIGIT_EPOCHS:-50}
case "${1:-irmae}" in
  irmae) [ -f models/irmae-mnist/card.md ] || adptycho train-irmae --data ../shared/data/mnist --out models/irmae-mnist --epochs "$FULL_EPOCHS" ;;
  irmae3) [ -f models/irmae-mnist-3/card.md ] || adptycho train-irmae --data ../shared/data/mnist --digit 3 --out models/irmae-mnist-3 --epochs "$DIGIT_EPOCHS" ;;
  irmae4) [ -f experiments/effective_rank/irmae-mnist-4/card.md ] || adptycho train-irmae --data ../shared/data/mnist --digit 4 --linear-layers 8 --latent-dim 128 --epochs "$DIGIT_EPOCHS" --batch-size 64 --learning-rate 0.001 --seed 0 --out experiments/effective_rank/irmae-mnist-4 --tensorboard experiments/effective_rank/irmae-mnist-4/tensorboard ;;
  ae) [ -f experiments/effective_rank/ae-mnist/card.md ] || adptycho train-irmae --data ../shared/data/mnist --linear-layers 0 --out experiments/effective_rank/ae-mnist --epochs "$FULL_EPOCHS" ;;
esac
