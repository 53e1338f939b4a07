"""Applicability rules of the ``reconstruct`` options (see ``adptycho.commands.options``).

The ``reconstruct`` command has several modes whose options differ: the engine schedule (Adam,
PIE engines, L-BFGS), the object kind (pixels, IRMAE latents, StyleGAN2 generators) and PtychoGAN
fits. Each rule below returns the one-line reason an explicitly given option would be ignored in
the mode the command line chose, or ``None`` when it applies. Pure functions of the parsed
arguments (and of a model directory's ``config.json``): no TensorFlow.
"""

from __future__ import annotations

from adptycho.commands.options import APPLIES, engine_names, is_tike

PIE = ("epie", "rpie", "mpie")


def effective_refine(args) -> list:
    """The groups ``reconstruct`` refines: the object (unless ``--fixed-object``) and
    ``--refine`` (default: the probe; nothing with ``--calibration``)."""
    groups = args.refine if args.refine is not None else ([] if args.calibration else ["probe"])
    return ([] if args.fixed_object else ["object"]) + list(groups)


def has_adam_stage(args) -> bool:
    """The fit has an Adam (Keras) stage: the default engine or a schedule naming adam, with the
    adam optimizer."""
    return (args.engine == "auto" or "adam" in engine_names(args.engine)) \
        and args.optimizer == "adam"


def has_pie_stage(args) -> bool:
    """A PIE stage may run: a schedule naming one, or the default (whose first stage is ePIE for
    pixel objects)."""
    return args.engine == "auto" or bool(set(engine_names(args.engine)) & set(PIE))


def is_stylegan2(name) -> bool:
    """A shipped StyleGAN2 name or a directory whose ``config.json`` is a StyleGAN2's (as
    ``adptycho.nn.stylegan2.is_stylegan2_model``, without importing TensorFlow)."""
    import json
    import os

    name = str(name)
    if name.startswith("stylegan2"):
        return True
    try:
        with open(os.path.join(name, "config.json")) as f:
            return str(json.load(f).get("architecture", "")).startswith("stylegan2")
    except (OSError, ValueError, AttributeError):
        return False


def _ptychogan(args):
    if args.ptychogan and not is_stylegan2(args.object):
        return (f"--ptychogan needs a StyleGAN2 object (--object stylegan2-faces or a StyleGAN2 "
                f"model directory), got --object {args.object}")
    return None


def first(*rules):
    """The rule that reports the first of ``rules`` that refuses."""
    def rule(args):
        return next((m for m in (r(args) for r in rules) if m), None)
    return rule


def not_ptychogan(flag, why="PtychoGAN fits have their own schedule"):
    def rule(args):
        if args.ptychogan:
            return f"{flag} does not apply to --ptychogan fits ({why})"
        return None
    return rule


def adam_only(flag, what="the adam engine"):
    def rule(args):
        if not has_adam_stage(args):
            why = "the L-BFGS optimizer" if args.optimizer == "lbfgs" else \
                f"the schedule {args.engine!r} has no adam stage"
            return f"{flag} applies to {what} ({why})"
        return None
    return rule


def refined(flag, group):
    def rule(args):
        if group not in effective_refine(args):
            return f"{flag} applies to a refined {group} (add {group} to --refine)" \
                if group != "object" else f"{flag} does not apply with --fixed-object"
        return None
    return rule


def pie_only(flag):
    def rule(args):
        if not has_pie_stage(args):
            return (f"{flag} is an option of the PIE engines (epie, rpie, mpie), not of "
                    f"{args.engine!r}")
        return None
    return rule


def _readout_noise(args):
    if args.loss != "poisson-gaussian":
        return (f"--readout-noise applies to --loss poisson-gaussian only (the {args.loss} "
                "loss ignores it)")
    return None


def _loss(args):
    if args.ptychogan and args.loss == "amplitude":
        return "--loss amplitude does not apply to --ptychogan fits (Poisson or poisson-gaussian)"
    return None


def _latent(flag, irmae_only=False):
    def rule(args):
        if args.object == "pixels":
            return (f"{flag} applies to latent objects (--object irmae-mnist, a model "
                    "directory, ...), not to --object pixels")
        if irmae_only and is_stylegan2(args.object):
            return f"{flag} applies to IRMAE latent objects, not to a StyleGAN2 generator"
        return None
    return first(rule, not_ptychogan(flag, "the generator image is the phase"))


def _parametrisation(args):
    if args.object != "pixels":
        return "--parametrisation applies to --object pixels (a latent object has none)"
    return None


def _tv_weight(args):
    """PtychoGAN's TV weight, or the TV prior of a pixel object in an adam / L-BFGS fit."""
    if args.ptychogan:
        return None
    if args.object != "pixels":
        return ("--tv-weight applies to --object pixels or --ptychogan fits (a latent object "
                "has no pixels)")
    return adam_only("--tv-weight")(args)


def _position_model(args):
    if "positions" not in effective_refine(args):
        return "--position-model applies when positions are refined (add positions to --refine)"
    return None


def _checkpoint(flag):
    def rule(args):
        if not has_adam_stage(args):
            return f"checkpoints apply to the adam engine; drop {flag}"
        return None
    return first(not_ptychogan(flag), rule)


def _keep_checkpoint(args):
    if args.checkpoint_dir is not None:
        return "--keep-checkpoint applies to the default checkpoint (a --checkpoint-dir is kept)"
    return None


def _stream(args):
    if is_tike(args):
        return "--stream does not apply to a tike .npz.bz2 scan (it is loaded whole)"
    if args.stream == "yes" and (args.engine not in ("adam", "auto") or args.optimizer != "adam"
                                 or args.ptychogan):
        return ("--stream yes applies to the adam engine and optimizer (the others load every "
                "pattern; the default engine uses adam alone on a streamed scan)")
    return None


def reconstruct_rules(ptychogan_options) -> dict:
    """{dest: rule} of every ``reconstruct`` option (the geometry group adds its own)."""
    gan = not_ptychogan
    rules = {name: APPLIES for name in ("input", "out", "png", "no_png", "object", "seed",
                                        "batch_size")}
    rules.update({
        "ptychogan": _ptychogan,
        "epochs": gan("--epochs", "their length is --latent-steps and --block-steps"),
        "loss": _loss, "readout_noise": _readout_noise,
        "refine": gan("--refine", "probe and positions stay fixed"),
        "calibration": gan("--calibration"),
        "position_model": first(gan("--position-model"), _position_model),
        "fixed_object": gan("--fixed-object"),
        "latent_mode": _latent("--latent-mode"),
        "train_decoder": _latent("--train-decoder", irmae_only=True),
        "optimizer": gan("--optimizer"), "engine": gan("--engine"),
        "parametrisation": first(gan("--parametrisation"), _parametrisation),
        "tv_weight": _tv_weight,
        "lr_object": first(adam_only("--lr-object"), refined("--lr-object", "object")),
        "decay": first(gan("--decay"), adam_only("--decay")),
        "probe_modes": gan("--probe-modes", "the probe is fixed"),
        "checkpoint_dir": _checkpoint("--checkpoint-dir"),
        "no_checkpoint": _checkpoint("--no-checkpoint"),
        "keep_checkpoint": first(_checkpoint("--keep-checkpoint"), _keep_checkpoint),
        "stream": _stream, "quiet": gan("--quiet", "one line per stage already"),
    })
    for group in ("probe", "positions", "distance"):
        flag = f"--lr-{group}"
        rules[f"lr_{group}"] = first(gan(flag), adam_only(flag), refined(flag, group))
    for dest in ("alpha", "beta", "rpie_alpha", "momentum", "fourier_relaxation",
                 "probe_power_cap"):
        flag = "--" + dest.replace("_", "-")
        rules[dest] = first(gan(flag), pie_only(flag))
    for dest in ("validation_fraction", "early_stopping", "strategy", "cpu_replicas"):
        rules[dest] = gan("--" + dest.replace("_", "-"), "no held-out patterns or replicas")
    rules.update(ptychogan_options)
    return rules
