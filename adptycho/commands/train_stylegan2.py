"""``adptycho train-stylegan2``: train (or resume) a small StyleGAN2 on the Olivetti faces."""

from __future__ import annotations

from adptycho.commands.options import (APPLIES, add_seed_option, command_line, positive_float,
                                       positive_int)

NAME = "train-stylegan2"
# options of the training run (architecture, optimisation, schedule): --export-only ignores them
TRAINING = ("steps", "resolution", "batch_size", "z_dim", "w_dim", "mapping_layers",
            "channel_base", "channel_max", "learning_rate", "r1_gamma", "r1_interval",
            "ema_kimg", "checkpoint_minutes", "sample_every", "seed")


def _training(flag):
    def rule(args):
        if args.export_only:
            return (f"{flag} does not apply with --export-only (the model is exported from the "
                    "checkpoint as it is)")
        return None
    return rule


def _projection_steps(args):
    if args.no_export:
        return "--projection-steps applies to the export, not with --no-export"
    return None


def add_parser(sub) -> dict:
    p = sub.add_parser(NAME, help="train (or resume) a small StyleGAN2 on the "
                       "Olivetti faces (subjects 36-39 held out); writes weights and a card")
    p.add_argument("--out", required=True, help="model directory (state in OUT/checkpoint)")
    p.add_argument("--data", help="Olivetti .npy file or its directory (default "
                                  "../shared/data/olivetti_faces)")
    p.add_argument("--steps", type=positive_int, default=5000, help="total minibatch steps")
    p.add_argument("--resolution", type=positive_int, default=64)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--z-dim", type=positive_int, default=128)
    p.add_argument("--w-dim", type=positive_int, default=128)
    p.add_argument("--mapping-layers", type=positive_int, default=2)
    p.add_argument("--channel-base", type=positive_int, default=1024,
                   help="channels at resolution r: min(base // r, max)")
    p.add_argument("--channel-max", type=positive_int, default=128)
    p.add_argument("--learning-rate", type=positive_float, default=0.002)
    p.add_argument("--r1-gamma", type=float, default=0.5)
    p.add_argument("--r1-interval", type=positive_int, default=16)
    p.add_argument("--ema-kimg", type=positive_float, default=2.5)
    p.add_argument("--checkpoint-minutes", type=positive_float, default=5.0)
    p.add_argument("--sample-every", type=positive_int, default=250)
    p.add_argument("--projection-steps", type=positive_int, default=300)
    p.add_argument("--threads", type=positive_int, default=1, help="TensorFlow CPU threads")
    p.add_argument("--export-only", action="store_true",
                   help="write the model directory from the current checkpoint, no training")
    p.add_argument("--no-export", action="store_true",
                   help="only train (and checkpoint); do not write the model directory at the "
                        "end (use --export-only later)")
    add_seed_option(p)
    rules = {dest: _training("--" + dest.replace("_", "-")) for dest in TRAINING}
    rules.update({dest: APPLIES for dest in ("out", "data", "threads", "export_only",
                                             "no_export")})
    rules["projection_steps"] = _projection_steps
    return rules


def _tensorboard(args):
    """``GANStepLogger`` for ``--tensorboard DIR`` (samples every ``--sample-every`` steps)."""
    if not getattr(args, "tensorboard", None):
        return None
    from adptycho.training.tensorboard import GANStepLogger

    settings = {k: v for k, v in vars(args).items() if k != "tensorboard"}
    return GANStepLogger(args.tensorboard, image_every=args.sample_every, settings=settings)


def run(args):
    from adptycho.nn.stylegan2_training import (export_from_checkpoint, limit_threads,
                                                train_stylegan2)

    limit_threads(args.threads)
    options = [("--data", args.data), ("--steps", args.steps), ("--resolution", args.resolution),
               ("--batch-size", args.batch_size), ("--z-dim", args.z_dim),
               ("--w-dim", args.w_dim), ("--mapping-layers", args.mapping_layers),
               ("--channel-base", args.channel_base), ("--channel-max", args.channel_max),
               ("--learning-rate", args.learning_rate), ("--r1-gamma", args.r1_gamma),
               ("--r1-interval", args.r1_interval), ("--ema-kimg", args.ema_kimg),
               ("--seed", args.seed), ("--out", args.out)]
    command = command_line(NAME, options)
    if args.export_only:
        metrics = export_from_checkpoint(args.out, args.data,
                                         projection_steps=args.projection_steps,
                                         command=command)
        print(f"adptycho: exported {args.out} from its checkpoint: {metrics}")
        return
    result = train_stylegan2(
        args.out, args.data, steps=args.steps, resolution=args.resolution,
        batch_size=args.batch_size, z_dim=args.z_dim, w_dim=args.w_dim,
        mapping_layers=args.mapping_layers, channel_base=args.channel_base,
        channel_max=args.channel_max, learning_rate=args.learning_rate,
        r1_gamma=args.r1_gamma, r1_interval=args.r1_interval, ema_kimg=args.ema_kimg,
        seed=args.seed, checkpoint_minutes=args.checkpoint_minutes,
        sample_every=args.sample_every, projection_steps=args.projection_steps,
        command=command, export=not args.no_export, on_step=_tensorboard(args))
    print(f"adptycho: StyleGAN2 at step {result['step']} "
          f"({result['seconds_per_step']:.2f} s/step this run); wrote {args.out}")
