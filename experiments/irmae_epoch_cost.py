"""What would the full IRMAE trained for the paper's 50 epochs cost here? (issue 23, Seifert (d)).

Reads the TensorBoard log of a ``adptycho train-irmae ... --tensorboard DIR`` run (one scalar
event per finished epoch, with its wall time) and the run's model card, and writes the measured
seconds per epoch and per training step (batch) together with the cost of 50 epochs of the full
MNIST training set (60000 digits, the paper's setting) at the same batch size: the step count
times the measured seconds per step. The first epoch is left out of the medians (it includes the
XLA compilation). The per-step cost does not depend on how many digits an epoch holds; the
validation pass (forward only) is not in the step count and adds a few per cent.

Writes ``--out`` (default ``experiments/effective_rank/irmae_epoch_cost.json``).

Run::

    adptycho train-irmae --data ../shared/data/mnist --digit 4 --epochs 50 --seed 0 --out experiments/effective_rank/irmae-mnist-4 --tensorboard experiments/effective_rank/irmae-mnist-4/tensorboard
    python experiments/irmae_epoch_cost.py --log experiments/effective_rank/irmae-mnist-4/tensorboard --card experiments/effective_rank/irmae-mnist-4/card.md
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FULL_MNIST_DIGITS = 60000
PAPER_EPOCHS = 50


def epoch_end_times(log_dir):
    """Wall times (s since the epoch) of the per-epoch ``loss`` events, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"),
                            recursive=True)):
        events = EventAccumulator(path, size_guidance={"tensors": 0, "scalars": 0})
        events.Reload()
        tags = events.Tags()
        for kind, read in (("tensors", events.Tensors), ("scalars", events.Scalars)):
            if "loss" in tags.get(kind, []):
                times.update({e.step: e.wall_time for e in read("loss")})
    return [times[step] for step in sorted(times)]


def card_number(card_path, name):
    with open(card_path) as f:
        match = re.search(rf"^\* {re.escape(name)}: (\S+)", f.read(), re.M)
    return None if match is None else float(match.group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", required=True, help="TensorBoard directory of the run")
    parser.add_argument("--card", required=True, help="the run's card.md")
    parser.add_argument("--out", default=os.path.join(HERE, "effective_rank",
                                                      "irmae_epoch_cost.json"))
    args = parser.parse_args(argv)
    ends = epoch_end_times(args.log)
    if len(ends) < 3:
        sys.exit(f"irmae_epoch_cost: only {len(ends)} epochs logged in {args.log}")
    images = card_number(args.card, "training images")
    batch = card_number(args.card, "batch size")
    steps = math.ceil(images / batch)
    epoch_s = np.diff(ends)  # epochs 2.. (the first epoch's start is not logged)
    per_step = float(np.median(epoch_s)) / steps
    full_steps = math.ceil(FULL_MNIST_DIGITS / batch)
    result = {
        "run_card": os.path.relpath(args.card, os.path.dirname(HERE)),
        "training_images": int(images), "batch_size": int(batch), "steps_per_epoch": steps,
        "epochs_logged": len(ends),
        "epoch_seconds_median": float(np.median(epoch_s)),
        "epoch_seconds_min": float(np.min(epoch_s)), "epoch_seconds_max": float(np.max(epoch_s)),
        "seconds_per_step_median": per_step,
        "full_mnist_steps_per_epoch": full_steps,
        "full_mnist_epoch_seconds": per_step * full_steps,
        "full_mnist_epoch_seconds_at_fastest_epoch": float(np.min(epoch_s)) / steps * full_steps,
        "paper_epochs": PAPER_EPOCHS,
        "full_mnist_50_epochs_hours": per_step * full_steps * PAPER_EPOCHS / 3600,
        "full_mnist_50_epochs_hours_at_fastest_epoch":
            float(np.min(epoch_s)) / steps * full_steps * PAPER_EPOCHS / 3600,
        "load_average_now": list(os.getloadavg()),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
