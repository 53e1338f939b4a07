"""Every option of every command either applies or is refused: the parser of each command is
walked, every option must have a rule, and every rule that can refuse is exercised here through
the command line (exit status 2, one line naming the option, nothing written). No fit runs: the
refusals come before the data is loaded (and before TensorFlow is imported)."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from adptycho.cli import build_parser, main
from adptycho.commands.checks import check_arguments, explicit_options, ignored_options
from adptycho.commands.options import APPLIES
from adptycho.commands.ptychogan import ONLY as PTYCHOGAN_ONLY
from adptycho.commands.train_stylegan2 import TRAINING as STYLEGAN2_TRAINING


def _subparsers(parser):
    return parser._subparsers._group_actions[0].choices


def _files(tmp):
    """Inputs the checks look at (none is read as data): names -> paths."""
    paths = {"SCAN": tmp / "scan.cxi", "TIKE": tmp / "star.npz.bz2", "CAL": tmp / "cal.h5",
             "INIT": tmp / "init.h5", "SG": tmp / "sg"}
    for name in ("SCAN", "TIKE", "CAL", "INIT"):
        paths[name].write_bytes(b"")
    paths["SG"].mkdir()
    (paths["SG"] / "config.json").write_text(json.dumps({"architecture": "stylegan2"}))
    for name, latent in (("PIXREC", False), ("LATREC", True)):
        paths[name] = tmp / f"{name.lower()}.h5"
        with h5py.File(paths[name], "w") as f:
            f["object"] = np.ones((4, 4), np.complex64)
            if latent:
                f["latent"] = np.zeros(8)
            f.attrs["settings"] = json.dumps({"loss": "amplitude"})
    return {k: str(v) for k, v in paths.items()}


GAN = ["--ptychogan", "--object", "SG"]
R = ["reconstruct", "SCAN", "--out", "OUT"]
# (command, dest, argv, words of the one-line message)
CASES = [
    ("reconstruct", "epochs", R + GAN + ["--epochs", "3"], "--epochs does not apply to --ptychogan"),
    ("reconstruct", "loss", R + GAN + ["--loss", "amplitude"], "--loss amplitude does not apply"),
    ("reconstruct", "readout_noise", R + ["--readout-noise", "2"],
     "--readout-noise applies to --loss poisson-gaussian only"),
    ("reconstruct", "refine", R + GAN + ["--refine", "probe"], "--refine does not apply"),
    ("reconstruct", "calibration", R + GAN + ["--calibration", "CAL"], "--calibration does not"),
    ("reconstruct", "position_model", R + ["--position-model", "affine"],
     "add positions to --refine"),
    ("reconstruct", "fixed_object", R + GAN + ["--fixed-object"], "--fixed-object does not apply"),
    ("reconstruct", "latent_mode", R + ["--latent-mode", "phase"],
     "--latent-mode applies to latent objects"),
    ("reconstruct", "train_decoder", R + ["--object", "SG", "--train-decoder"],
     "--train-decoder applies to IRMAE latent objects"),
    ("reconstruct", "ptychogan", R + ["--ptychogan"], "--ptychogan needs a StyleGAN2 object"),
    ("reconstruct", "optimizer", R + GAN + ["--optimizer", "lbfgs"], "--optimizer does not"),
    ("reconstruct", "engine", R + GAN + ["--engine", "adam"], "--engine does not apply"),
    ("reconstruct", "parametrisation", R + ["--object", "irmae-mnist", "--parametrisation",
                                            "phase"], "--parametrisation applies to --object pixels"),
    ("reconstruct", "tv_weight", R + ["--object", "irmae-mnist", "--tv-weight", "2"],
     "--tv-weight applies to --object pixels"),
    ("reconstruct", "lr_object", R + ["--engine", "epie", "--lr-object", "0.1"],
     "the schedule 'epie' has no adam stage"),
    ("reconstruct", "lr_probe", R + ["--refine", "", "--lr-probe", "0.1"],
     "add probe to --refine"),
    ("reconstruct", "lr_positions", R + ["--optimizer", "lbfgs", "--refine", "",
                                         "--lr-positions", "0.1"], "the L-BFGS optimizer"),
    ("reconstruct", "lr_distance", R + GAN + ["--lr-distance", "0.1"], "--lr-distance does not"),
    ("reconstruct", "decay", R + ["--engine", "rpie", "--decay", "0.9"], "--decay applies to"),
    ("reconstruct", "probe_modes", R + GAN + ["--probe-modes", "2"], "the probe is fixed"),
    ("reconstruct", "checkpoint_dir", R + ["--engine", "epie", "--checkpoint-dir", "CK"],
     "checkpoints apply to the adam engine; drop --checkpoint-dir"),
    ("reconstruct", "no_checkpoint", R + ["--engine", "epie", "--no-checkpoint"],
     "drop --no-checkpoint"),
    ("reconstruct", "keep_checkpoint", R + ["--checkpoint-dir", "CK", "--keep-checkpoint"],
     "a --checkpoint-dir is kept"),
    ("reconstruct", "stream", R + ["--engine", "epie", "--stream", "yes"],
     "--stream yes applies to the adam engine"),
    ("reconstruct", "quiet", R + GAN + ["--quiet"], "--quiet does not apply"),
    ("reconstruct", "focus_distance", ["reconstruct", "TIKE", "--out", "OUT", "--focus-distance",
                                       "0.1"], "--focus-distance does not apply to a tike"),
    ("reconstruct", "nearfield", ["reconstruct", "TIKE", "--out", "OUT", "--nearfield"],
     "--nearfield does not apply to a tike"),
    ("calibrate", "position_model", ["calibrate", "SCAN", "--out", "OUT", "--no-positions",
                                     "--position-model", "affine"], "with --no-positions"),
    ("calibrate", "no_distance", ["calibrate", "SCAN", "--out", "OUT", "--no-distance"],
     "--no-distance applies to near-field scans"),
    ("calibrate", "farfield_distance", ["calibrate", "SCAN", "--out", "OUT", "--nearfield",
                                        "--farfield-distance"], "applies to far-field scans"),
    ("calibrate", "focus_distance", ["calibrate", "TIKE", "--out", "OUT", "--focus-distance",
                                     "0.1"], "tike"),
    ("calibrate", "nearfield", ["calibrate", "TIKE", "--out", "OUT", "--nearfield"], "tike"),
    ("oversample", "focus_distance", ["oversample", "TIKE", "--init", "INIT", "--out", "OUT",
                                      "--focus-distance", "0.1"], "tike"),
    ("oversample", "nearfield", ["oversample", "TIKE", "--init", "INIT", "--out", "OUT",
                                 "--nearfield"], "tike"),
    ("orient", "focus_distance", ["orient", "TIKE", "--focus-distance", "0.1"], "tike"),
    ("orient", "nearfield", ["orient", "TIKE", "--nearfield"], "tike"),
    ("landscape", "data", ["landscape", "SCAN", "--reconstruction", "PIXREC", "--out", "OUT.png",
                           "--data", "mnist"], "--data applies to latent reconstructions"),
    ("landscape", "seed", ["landscape", "SCAN", "--reconstruction", "LATREC", "--out", "OUT.png",
                           "--seed", "2"], "--seed applies to pixel reconstructions"),
    ("landscape", "readout_noise", ["landscape", "SCAN", "--reconstruction", "PIXREC", "--out",
                                    "OUT.png", "--readout-noise", "2"], "the amplitude loss"),
    ("landscape", "focus_distance", ["landscape", "TIKE", "--reconstruction", "PIXREC", "--out",
                                     "OUT.png", "--focus-distance", "0.1"], "tike"),
    ("landscape", "nearfield", ["landscape", "TIKE", "--reconstruction", "PIXREC", "--out",
                                "OUT.png", "--nearfield"], "tike"),
    ("simulate", "jitter", ["simulate", "--out", "OUT", "--scan", "fermat", "--jitter", "2"],
     "--jitter applies to --scan raster"),
    ("simulate", "seed", ["simulate", "--out", "OUT", "--jitter", "0", "--seed", "3"],
     "nothing in this simulation is random"),
    ("reconstruct", "tensorboard", R + ["--optimizer", "lbfgs", "--refine", "", "--tensorboard",
                                        "TB"], "--tensorboard logs the epochs"),
    ("reconstruct", "init", R + ["--init", "INIT", "--calibration", "CAL"],
     "--init and --calibration both set the probe"),
    ("uncertainty", "covariance", ["uncertainty", "SCAN", "PIXREC", "--out", "OUT",
                                   "--method", "laplace", "--covariance", "fisher"],
     "--covariance applies to the fisher method, not to laplace"),
    ("uncertainty", "probes", ["uncertainty", "SCAN", "LATREC", "--out", "OUT", "--probes", "4"],
     "--probes applies to the fisher method, not to laplace"),
    ("uncertainty", "preset", ["uncertainty", "SCAN", "LATREC", "--out", "OUT", "--preset",
                               "fast"], "--preset applies to the fisher method, not to laplace"),
    ("uncertainty", "estimator", ["uncertainty", "SCAN", "LATREC", "--out", "OUT", "--estimator",
                                  "hutchinson"],
     "--estimator applies to the fisher method, not to laplace"),
    ("uncertainty", "samples", ["uncertainty", "SCAN", "PIXREC", "--out", "OUT", "--samples",
                                "9"], "--samples applies to the hmc method, not to fisher"),
    ("uncertainty", "readout_noise", ["uncertainty", "SCAN", "PIXREC", "--out", "OUT",
                                      "--readout-noise", "2"], "the amplitude model ignores it"),
    ("train-stylegan2", "projection_steps", ["train-stylegan2", "--out", "OUT", "--no-export",
                                             "--projection-steps", "5"], "not with --no-export"),
    ("train-stylegan2", "tensorboard", ["train-stylegan2", "--out", "OUT", "--export-only",
                                        "--tensorboard", "OUT"], "--export-only trains nothing"),
]
CASES += [("reconstruct", dest, R + ["--" + dest.replace("_", "-"), "1"],
           "applies to --ptychogan fits only") for dest in PTYCHOGAN_ONLY]
CASES += [("reconstruct", dest, R + ["--engine", "adam", "--" + dest.replace("_", "-"), "0.5"],
           "is an option of the PIE engines") for dest in ("alpha", "beta", "rpie_alpha",
                                                           "momentum", "fourier_relaxation",
                                                           "probe_power_cap")]
CASES += [("reconstruct", dest, R + GAN + ["--" + dest.replace("_", "-"), value],
           "does not apply to --ptychogan") for dest, value in (
    ("validation_fraction", "0.1"), ("early_stopping", "3"), ("strategy", "mirrored"),
    ("cpu_replicas", "2"))]
CASES += [("train-stylegan2", dest, ["train-stylegan2", "--out", "OUT", "--export-only",
                                     "--" + dest.replace("_", "-"), "3"],
           "does not apply with --export-only") for dest in STYLEGAN2_TRAINING]


def _argv(case_argv, files, out):
    def one(word):
        if word.startswith("OUT"):
            return str(out / ("result.png" if word == "OUT.png" else "result"))
        if word == "CK":
            return str(out / "ck")
        return files.get(word, word)
    return [one(w) for w in case_argv]


def test_every_option_of_every_command_has_a_rule():
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        dests = {a.dest for a in sub._actions if a.dest != "help"}
        assert set(parser.option_rules[name]) == dests, name


def test_every_rule_that_can_refuse_has_a_case_below():
    parser = build_parser()
    refusing = {(name, dest) for name, rules in parser.option_rules.items()
                for dest, rule in rules.items() if rule is not APPLIES}
    assert refusing == {(c[0], c[1]) for c in CASES}


@pytest.mark.parametrize("command, dest, argv, words", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_an_option_that_would_be_ignored_is_refused(tmp_path, capsys, command, dest, argv, words):
    files = _files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    argv = _argv(argv, files, out)
    parser = build_parser()
    args = parser.parse_args(argv)
    # the refusal is this option's own rule ...
    messages = list(ignored_options(args, {dest}, parser.option_rules[command]))
    assert len(messages) == 1 and words in messages[0], messages
    assert dest in explicit_options(argv)
    # ... and the command line ends with it: status 2, one line, nothing written
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adptycho: error: ") and words in err[0], err
    assert not os.listdir(out)


@pytest.mark.parametrize("argv", [
    R + ["--engine", "epie", "--alpha", "0.5", "--fourier-relaxation", "1"],
    R + ["--engine", "epie:5,adam:5", "--momentum", "0.5", "--lr-object", "0.1", "--decay", "0.9"],
    R + ["--refine", "probe,positions", "--position-model", "affine", "--lr-positions", "0.1"],
    R + ["--loss", "poisson-gaussian", "--readout-noise", "2", "--keep-checkpoint"],
    R + GAN + ["--lr-object", "0.1", "--batch-size", "4", "--loss", "poisson", "--blocks", "1",
               "--seed", "2"],
    R + ["--object", "irmae-mnist", "--latent-mode", "phase", "--train-decoder"],
    R + ["--engine", "adam", "--stream", "yes", "--validation-fraction", "0.1",
         "--early-stopping", "3", "--checkpoint-dir", "CK", "--quiet"],
    ["reconstruct", "SCAN", "--out", "OUT", "--nearfield", "--stream", "no"],
    ["calibrate", "SCAN", "--out", "OUT", "--nearfield", "--no-distance",
     "--position-model", "affine"],
    ["calibrate", "SCAN", "--out", "OUT", "--farfield-distance", "--no-positions"],
    ["landscape", "SCAN", "--reconstruction", "LATREC", "--out", "OUT.png", "--data", "mnist"],
    ["landscape", "SCAN", "--reconstruction", "PIXREC", "--out", "OUT.png", "--seed", "3",
     "--loss", "poisson-gaussian", "--readout-noise", "2"],
    ["simulate", "--out", "OUT", "--scan", "fermat", "--poisson", "--seed", "2"],
    ["train-stylegan2", "--out", "OUT", "--export-only", "--projection-steps", "5", "--data", "x"],
    ["uncertainty", "SCAN", "PIXREC", "--out", "OUT", "--probes", "4", "--covariance", "fisher",
     "--noise-model", "poisson-gaussian", "--readout-noise", "2", "--estimator", "hutchinson"],
    ["uncertainty", "SCAN", "LATREC", "--out", "OUT", "--method", "hmc", "--samples", "9"],
])
def test_an_option_in_a_mode_where_it_applies_is_accepted(tmp_path, argv):
    files = _files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    argv = _argv(argv, files, out)
    check_arguments(build_parser().parse_args(argv), argv)  # raises nothing


def test_an_ignored_option_is_refused_before_tensorflow_is_imported(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scan = tmp_path / "scan.cxi"
    scan.write_bytes(b"")
    code = ("import sys, adptycho.cli as cli\n"
            f"code = cli.main(['reconstruct', {str(scan)!r}, '--out', "
            f"{str(tmp_path / 'out.h5')!r}, '--engine', 'adam', '--alpha', '0.5'])\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=root), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == ("adptycho: error: --alpha is an option of the PIE engines "
                                   "(epie, rpie, mpie), not of 'adam'")


# reconstruct options the command consumes itself rather than through the config (and where)
_NOT_IN_CONFIG = {"input": "load", "out": "save", "png": "figure", "no_png": "figure",
                  "calibration": "load", "focus_distance": "load", "nearfield": "load",
                  "stream": "load", "checkpoint_dir": "run: config.checkpoint_dir",
                  "no_checkpoint": "run: config.checkpoint_dir",
                  "keep_checkpoint": "run: after the save", "cpu_replicas": "run: the strategy",
                  "init": "run: initial object and grid (commands.convert.apply_init)",
                  "tensorboard": "run: callbacks (commands.tensorboard)",
                  "ptychogan": "commands.ptychogan", **{d: "commands.ptychogan"
                                                         for d in PTYCHOGAN_ONLY}}
# (dest, a value other than the default, options the value needs)
_CHANGES = [
    ("epochs", 7, {}), ("batch_size", 3, {}), ("loss", "poisson", {}),
    ("readout_noise", 2.5, {}), ("refine", ["positions"], {}),
    ("position_model", "affine", {}), ("fixed_object", True, {}),
    ("object", "irmae-mnist", {}), ("latent_mode", "phase", {"object": "irmae-mnist"}),
    ("train_decoder", True, {"object": "irmae-mnist"}),
    ("optimizer", "lbfgs", {"refine": []}), ("parametrisation", "phase", {}), ("tv_weight", 2.0, {}),
    ("engine", "epie", {}), ("alpha", 0.5, {}), ("beta", 0.5, {}), ("rpie_alpha", 0.5, {}),
    ("momentum", 0.5, {}), ("fourier_relaxation", 1.0, {}), ("probe_power_cap", 2.0, {}),
    ("lr_object", 0.2, {}),
    ("lr_probe", 0.2, {}), ("lr_positions", 0.2, {}), ("lr_distance", 0.2, {}),
    ("decay", 0.9, {}), ("probe_modes", 2, {}), ("validation_fraction", 0.1, {}),
    ("early_stopping", 3, {}), ("strategy", "mirrored", {}), ("seed", 5, {}),
    ("quiet", True, {}),
]


def test_every_reconstruct_option_reaches_the_config_or_the_command():
    """Each option either changes the ``ReconstructConfig`` the command passes to
    ``reconstruct`` or is one the command uses itself (listed above with where)."""
    import dataclasses

    from adptycho.commands.reconstruct import config_from_args

    parser = build_parser()
    dests = set(parser.option_rules["reconstruct"])
    assert {c[0] for c in _CHANGES} | set(_NOT_IN_CONFIG) == dests
    assert not {c[0] for c in _CHANGES} & set(_NOT_IN_CONFIG)
    for dest, value, needs in _CHANGES:
        base = parser.parse_args(["reconstruct", "scan.cxi", "--out", "rec.h5"])
        for name, other in needs.items():
            setattr(base, name, other)
        before = config_from_args(base, None)
        setattr(base, dest, value)
        after = config_from_args(base, None)
        changed = [f.name for f in dataclasses.fields(after)
                   if getattr(after, f.name) != getattr(before, f.name)]
        assert changed, f"--{dest} does not reach the config"
