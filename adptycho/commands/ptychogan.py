"""``adptycho reconstruct --ptychogan``: the PtychoGAN options and their fit
(``adptycho.training.ptychogan``)."""

from __future__ import annotations

import os
import time

from adptycho.commands.options import load_scan, nonnegative_float, positive_float
from adptycho.errors import AdptychoError

ONLY = ("latent_steps", "block_steps", "blocks", "discriminator_weight", "generator_lr",
        "region")


def _only(flag):
    def rule(args):
        return None if args.ptychogan else f"{flag} applies to --ptychogan fits only"
    return rule


def add_options(p) -> dict:
    """The PtychoGAN options of ``reconstruct``; returns their rules."""
    p.add_argument("--ptychogan", action="store_true",
                   help="PtychoGAN fit (with --object stylegan2-faces or a StyleGAN2 directory): "
                        "phase object exp(j pi v), latent stage, then generator blocks released "
                        "shallow to deep; Poisson loss (poisson-gaussian if asked), TV and "
                        "discriminator priors; probe and positions fixed")
    p.add_argument("--latent-steps", type=int, default=300, help="PtychoGAN: latent-only steps")
    p.add_argument("--block-steps", type=int, default=100,
                   help="PtychoGAN: steps per block-release stage")
    p.add_argument("--blocks", type=int, help="PtychoGAN: blocks to release (default all)")
    p.add_argument("--tv-weight", type=nonnegative_float, default=None,
                   help="total-variation prior: PtychoGAN's weight (default 0.003), or for "
                        "pixel objects a prior on the object (loss summed over the patterns "
                        "per unit of TV; default 0: none; acts in the adam stage)")
    p.add_argument("--discriminator-weight", type=float, default=1e-4,
                   help="PtychoGAN: weight of log(1 - D(G(w))) (0: off)")
    p.add_argument("--generator-lr", type=positive_float, default=1e-3,
                   help="PtychoGAN: Adam step of released generator weights")
    p.add_argument("--region", help="generator objects: y0,x0,height,width of the generator "
                                    "image on the object grid (default: whole grid)")
    return {dest: _only("--" + dest.replace("_", "-")) for dest in ONLY}


def _region(text):
    if not text:
        return None
    try:
        region = tuple(int(v) for v in text.split(","))
    except ValueError:
        region = ()
    if len(region) != 4:
        raise AdptychoError(f"--region must be y0,x0,height,width, got {text!r}")
    return region


def run(args):
    """Load -> settings -> ``reconstruct_ptychogan`` -> save (and the figure)."""
    from adptycho.analysis.plots import plot_reconstruction
    from adptycho.io import save_reconstruction
    from adptycho.training.ptychogan import PtychoGANSettings, reconstruct_ptychogan

    region = _region(args.region)
    scan = load_scan(args)
    print(f"adptycho: {scan.describe()}")
    settings = PtychoGANSettings(
        latent_steps=args.latent_steps, block_steps=args.block_steps, blocks=args.blocks,
        tv_weight=PtychoGANSettings.tv_weight if args.tv_weight is None else args.tv_weight,
        discriminator_weight=args.discriminator_weight,
        generator_learning_rate=args.generator_lr, batch_size=args.batch_size,
        latent_learning_rate=args.lr_object or PtychoGANSettings.latent_learning_rate)
    loss = "poisson-gaussian" if args.loss == "poisson-gaussian" else "poisson"
    started = time.perf_counter()
    result = reconstruct_ptychogan(scan, model=args.object, settings=settings, loss=loss,
                                   readout_noise=args.readout_noise, region_px=region,
                                   mode="phase", seed=args.seed, verbose=1)
    result.settings["input"] = os.path.abspath(args.input)
    save_reconstruction(args.out, result)
    print(f"adptycho: PtychoGAN ({loss} loss) in {time.perf_counter() - started:.1f} s; loss "
          f"{result.loss_history[0]:.4g} -> {result.loss_history[-1]:.4g}, amplitude residual "
          f"{result.residual_history[-1]:.4g}; wrote {args.out}")
    if not args.no_png:
        png = args.png or os.path.splitext(args.out)[0] + ".png"
        plot_reconstruction(result, png, title=os.path.basename(args.input))
        print(f"adptycho: wrote {png}")
