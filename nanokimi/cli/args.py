"""The command line's flags and what they resolve to: the parser of every subcommand, the settings,
arms and backend they ask for, the --out directory, and errors said in one line.

Every setting of a run has its flag from its declaration (settings.py: RunConfig, its model, its
optimizer); unset flags keep the preset's value, and the configs validate values in their own words.
"""

import argparse
import math
import sys
from fractions import Fraction

from .. import settings
from ..experiments.arms import ARCHITECTURES
from ..experiments.compare import PRESET_HELP, PRESETS
from ..experiments.scaling import PRESETS as SCALE_PRESETS
from ..metrics import threads_per_job
from ..running import guards
from ..running.backends import BACKENDS, make_backend
from ..status import FAILED
from ..training.data import BUILTIN, MAX_TEXT_LABEL, TINY_SHAKESPEARE
from ..training.optim import OPTIMIZERS
from ..training.train import RunConfig


class Parser(argparse.ArgumentParser):
    """Bad flags get one line (not the whole usage) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(type_):
    """For the commands' own counts (--seeds, --jobs, --steps…); settings are checked by the configs."""
    def parse(text):
        value = type_(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def add_training_flags(p, presets=PRESET_HELP, default="seed"):
    """--data, --preset (`presets`: {name: help}) and one flag per setting of RunConfig, its model and its
    optimizer (settings.py); unset flags keep the preset's value. The configs validate the values, in their own words."""
    p.add_argument("--data", help=f"text file to train on (default: ./input.txt if present, else the built-in corpus); "
                                  f"'{BUILTIN}' or '{TINY_SHAKESPEARE}' (downloaded once and cached). A regular UTF-8 "
                                  f"file of at most {MAX_TEXT_LABEL}")
    p.add_argument("--preset", default=default, choices=list(presets),
                   help="; ".join(f"{name}: {text}" for name, text in presets.items()) + f" (default: {default})")
    for f, owner in settings.all_fields(RunConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=settings.value_type(f, owner), help=f.metadata["help"],
                       choices=f.metadata["choices"])


def add_arm_flags(p):
    """--arms, --controls, --equal-compute, --optimizers, --muon: which arms a grid trains (ablate, sweep)."""
    p.add_argument("--arms", help="comma-separated ARCHITECTURE+OPTIMIZER pairs, e.g. nanogpt+adamw,nanokimi+truemuon; "
                                  f"architectures: {', '.join(ARCHITECTURES)} (default: nanogpt and nanokimi, "
                                  "or the four --controls, or the three --equal-compute, with each of --optimizers)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--controls", action="store_true",
                       help="the four architectures nanogpt, relu-matched, swiglu-matched, nanokimi (the controls match "
                            "NanoKimi's parameter count) instead of nanogpt and nanokimi")
    which.add_argument("--equal-compute", action="store_true",
                       help="the Kimi-style sparse MoE and its two dense SwiGLU controls: active-matched (its forward "
                            "FLOPs per token: equal compute) and total-matched (its parameters: equal size); "
                            "--optimizers then defaults to adamw")
    p.add_argument("--optimizers",
                   help="comma-separated optimizers of every architecture (default: adamw,truemuon; "
                        "adamw with --equal-compute)")
    p.add_argument("--muon", action="store_true", help="add PyTorch's Muon to --optimizers")


def add_backend_flags(p):
    """--backend and --ray-address: where the runs train (backends.py)."""
    p.add_argument("--backend", default="local", choices=BACKENDS,
                   help="local: worker processes on this machine (default); ray: one Ray task per run, on the "
                        "cluster at --ray-address (needs: pip install -r requirements-ray.txt)")
    p.add_argument("--ray-address", help="HOST:PORT of a Ray cluster's head (default: $NANOKIMI_RAY_ADDRESS, else "
                                         "$RAY_ADDRESS; none: start a local Ray instance)")


def build_parser():
    parser = Parser(prog="python -m nanokimi", description=(
        "nanokimi: does a Kimi-style model (MoE + TrueMuon) beat a plain GPT (AdamW), and at what cost?"))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser,
                                metavar="{compare,ablate,sweep,scale,bench,runner}")

    p = sub.add_parser("compare", help="train NanoGPT and NanoKimi on the same text and compare them",
                       description="Train NanoGPT and NanoKimi, print the comparison and write results.csv, "
                                   "history.csv and comparison_graph.png into --out.")
    add_training_flags(p)
    p.add_argument("--gpt-optimizer", default="adamw", choices=OPTIMIZERS, help="optimizer for NanoGPT (default: adamw)")
    p.add_argument("--kimi-optimizer", default="truemuon", choices=OPTIMIZERS, help="optimizer for NanoKimi (default: truemuon)")
    p.add_argument("--out", default=".", help="directory for results.csv, history.csv, comparison_graph.png (default: .)")
    p.add_argument("--jobs", type=int, default=1, choices=(1, 2),
                   help="models trained at once (default: 1, one after the other). 2: both at the same time, each "
                        "with cores/2 threads unless --threads says otherwise; results.csv's shared_with then names "
                        "the other, as their step times compare with each other, not with runs made alone")
    add_backend_flags(p)

    a = sub.add_parser("ablate", help="arms of architecture x optimizer over several seeds, with confidence intervals",
                       description="Train every arm (architecture + optimizer) for --seeds seeds, paired by seed, "
                                   "and report each arm, the main effects and, with the controls, the decomposition "
                                   "of NanoKimi - NanoGPT into parameters, activation and routing (with --equal-compute: "
                                   "the Kimi-style MoE against dense models of its compute and of its size), each with "
                                   "a 95%% confidence interval, a paired t-test p-value and Holm's correction, then the "
                                   "compute multipliers: the training FLOPs (and time) one arm needs to reach another's "
                                   "final validation loss, as a multiple of the other's. Writes "
                                   "ablation.csv, ablation_summary.csv, ablation.png and runs/ into --out; run again "
                                   "with the same --out, it trains only what is missing or failed.")
    add_training_flags(a)
    a.add_argument("--seeds", type=_positive(int), default=3, help="seeds per arm (default: 3): --seed, --seed+1, ...")
    add_arm_flags(a)
    a.add_argument("--target", type=_positive(float),
                   help="validation loss for time-to-target (default: the worst arm's mean final loss)")
    a.add_argument("--out", default=".", help="directory for the ablation files (default: .)")
    a.add_argument("--jobs", type=_positive(int), default=1,
                   help="runs trained at once (default: 1). Each gets cores/jobs threads unless --threads says "
                        "otherwise; parallel runs share memory bandwidth, so compare their times only with each other. "
                        "With --backend ray the cluster's CPUs decide how many run at once; --jobs only sets the "
                        "default threads")
    add_backend_flags(a)

    w = sub.add_parser("sweep", help="tune each arm's learning rate on tuning seeds, then compare at tuned learning rates",
                       description="For every arm, train a log-spaced grid of learning rates (--lr-factors x the "
                                   "arm's original: AdamW's lr, TrueMuon/Muon's matrix lr with the AdamW part at "
                                   "its original lr, or MuonClip's one lr for both) on tuning seeds that are never confirmation seeds, choose the "
                                   "lowest mean final validation loss (a diverged run counts as worst), then train "
                                   "--seeds confirmation seeds at the chosen and at the original learning rates and "
                                   "report the ablation's effects for both. Writes sweep.csv, chosen_lrs.csv, "
                                   "sweep.png, tuned/, original/ and runs/ into --out; resumable.")
    add_training_flags(w)
    add_arm_flags(w)
    w.add_argument("--seeds", type=_positive(int), default=3, help="confirmation seeds per arm (default: 3)")
    w.add_argument("--tuning-seeds", type=_positive(int), default=1,
                   help="tuning seeds per arm and learning rate (default: 1), numbered from --seed + 100000")
    w.add_argument("--lr-factors", default="1/9,1/3,1,3,9",
                   help="the learning-rate grid as factors of each arm's original, numbers or fractions "
                        "(default: 1/9,1/3,1,3,9, the app's default too)")
    w.add_argument("--target", type=_positive(float),
                   help="validation loss for time-to-target (default: the worst arm's mean final loss)")
    w.add_argument("--out", default=".", help="directory for the sweep files (default: .)")
    w.add_argument("--jobs", type=_positive(int), default=1, help="runs trained at once (default: 1)")
    add_backend_flags(w)

    add_scale_parser(sub)

    b = sub.add_parser("bench", help="time training steps, evaluation and generation of one model",
                       description="Time real engine training steps (batch + forward + backward + optimizer) "
                                   "after a warm-up, then evaluation, inference and generation. Defaults: the "
                                   "seed configuration. --iters and --eval-interval are not used.")
    add_training_flags(b)
    b.add_argument("--model", default="nanogpt", choices=("nanogpt", "nanokimi"), help="which model (default: nanogpt)")
    b.add_argument("--optimizer", choices=OPTIMIZERS, help="default: adamw for nanogpt, truemuon for nanokimi")
    b.add_argument("--steps", type=_positive(int), default=50, help="timed training steps (default: 50)")
    b.add_argument("--warmup", type=int, default=10, help="untimed training steps first (default: 10)")
    b.add_argument("--json", action="store_true", help="end with one line holding every figure as a JSON object")

    sub.add_parser("runner", help="train the app's queued runs one at a time (started by the app)",
                   description="Train the runs queued in the store under $NANOKIMI_HOME (default ./runs), "
                               "one at a time, until the queue is empty. The Streamlit app starts it.")
    return parser


def add_scale_parser(sub):
    s = sub.add_parser("scale", help="a ladder of model sizes per arm: fitted loss-against-compute curves and the "
                                     "compute multiplier at every size",
                       description="Train every arm at every rung of a size ladder (n_embd a multiple of 16, "
                                   "n_layer = n_head = n_embd/16), each rung for --tokens-per-param tokens per "
                                   "non-embedding parameter, over --seeds seeds, learning rates carried from the seed "
                                   "rung (lr as 1/width, matrix_lr constant); fit L(C) = E + A*C^-alpha per arm with a "
                                   "bootstrap over seeds and report the compute multiplier of each arm over the first "
                                   "at every size. Prints the planned FLOPs and an estimated time first. Writes "
                                   "scale.csv, scale_fits.csv, scale.png and runs/ into --out; resumable.")
    add_training_flags(s, presets={name: p.help for name, p in SCALE_PRESETS.items()}, default="default")
    s.add_argument("--arms", help="comma-separated ARCHITECTURE+OPTIMIZER pairs, the baseline first "
                                  "(default: the preset's)")
    s.add_argument("--widths", help="the rungs' n_embd, comma-separated multiples of 16 (default: the preset's)")
    s.add_argument("--tokens-per-param", type=_positive(float),
                   help="each rung's training tokens per non-embedding parameter, 12*n_layer*n_embd^2 "
                        "(default: the preset's)")
    s.add_argument("--seeds", type=_positive(int), default=2, help="seeds per arm and rung (default: 2)")
    s.add_argument("--out", default=".", help="directory for scale.csv, scale_fits.csv, scale.png, runs/ (default: .)")
    s.add_argument("--jobs", type=_positive(int), default=2,
                   help="runs trained at once (default: 2), each with cores/jobs threads unless --threads says "
                        "otherwise; with --backend ray the cluster's CPUs decide")
    add_backend_flags(s)


def training_settings(args):
    """The settings given on the command line (None where a flag was not given), with --jobs sharing
    out the cores when --threads is not given."""
    chosen = {name: getattr(args, name) for name in settings.names(RunConfig)}
    if getattr(args, "jobs", 1) > 1 and chosen["threads"] is None:
        chosen["threads"] = threads_per_job(args.jobs)
    return chosen


def grid_settings(args):
    """The settings of a grid command; (settings, base seed)."""
    chosen = training_settings(args)
    base_seed = chosen.pop("seed") or PRESETS[args.preset].seed
    return chosen, base_seed


def chosen_arms(args):
    """The (architecture, optimizer) arms the arm flags ask for; SettingError when one is unknown."""
    from ..experiments import ablation

    if args.arms:
        return ablation.parse_arms(args.arms)
    named = args.optimizers or ("adamw" if args.equal_compute else "adamw,truemuon")
    optimizers = [o.strip() for o in named.split(",") if o.strip()] + (["muon"] if args.muon else [])
    architectures = (ablation.CONTROLS if args.controls else ablation.equal_compute_architectures()
                     if args.equal_compute else ablation.DEFAULT_ARCHITECTURES)
    return ablation.grid_arms(architectures, list(dict.fromkeys(optimizers)))  # the configs check the names


def lr_factors(text):
    """--lr-factors: "1/9,1/3,1,3,9" -> [1/9, 1/3, 1.0, 3.0, 9.0]; ValueError unless each is a positive number."""
    try:
        factors = [float(Fraction(f.strip())) for f in text.split(",") if f.strip()]
    except (ValueError, ZeroDivisionError):
        factors = []
    if not factors or min(factors) <= 0 or not all(math.isfinite(f) for f in factors):
        raise ValueError(f"--lr-factors must be positive numbers or fractions such as 1/9, got {text!r}")
    return factors


def backend_for(args):
    """The backend the flags ask for; BackendError with one line when it cannot be had."""
    return make_backend(args.backend, getattr(args, "jobs", 1), args.ray_address)


def make_out(path):
    """The --out directory, created, and the grids' folders in it, each checked by writing a file
    there; GuardError with a sentence when one cannot be written (guards.py)."""
    return guards.writable_out(path, subfolders=("runs", "tuned", "original"))


def check_machine(runs, corpus, args):
    """GuardError for runs this machine cannot hold, --jobs at once (guards.py); its warnings on stderr."""
    for warning in guards.check_machine(runs, corpus, getattr(args, "jobs", 1), args.backend):
        print(warning, file=sys.stderr)


def fail(command, message):
    print(f"nanokimi {command}: error: {message}", file=sys.stderr)
    return 2


def say_failures(results):
    """Each failed run's cause on stderr, last, where it is seen (a run refused in its worker sends no
    progress at all, and the report's table has room only for 'failed'); the exit status: 1 if any failed."""
    failed = {r.config.name: r.message for r in results if r.status == FAILED}
    for name, message in failed.items():
        print(f"{name} failed: {message or 'no reason given'}", file=sys.stderr)
    return 1 if failed else 0
