"""The command line: `python -m nanokimi compare | ablate | sweep | bench | runner`.

`compare` reproduces the original comparison script (with `--preset seed`) and goes beyond it:
any optimizer on either model, top-k routing, honest timing and memory, and three files in --out.
"""

import argparse
import math
import sys
from fractions import Fraction
from pathlib import Path

from . import settings
from .running.backends import BACKENDS, BackendError, make_backend
from .experiments.compare import ARCHITECTURES, PRESET_HELP, PRESETS, check_data, comparison_runs
from .training.data import BUILTIN, MAX_TEXT_LABEL, TINY_SHAKESPEARE, DataError, resolve_source
from .training.optim import OPTIMIZERS
from .metrics import threads_per_job
from .status import FAILED, MEASURED
from .training.train import RunConfig
from .running.progress import ModelProgress as Progress


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


def add_training_flags(p):
    """--data, --preset and one flag per setting of RunConfig, its model and its optimizer (settings.py);
    unset flags keep the preset's value. The configs validate the values, in their own words."""
    p.add_argument("--data", help=f"text file to train on (default: ./input.txt if present, else the built-in corpus); "
                                  f"'{BUILTIN}' or '{TINY_SHAKESPEARE}' (downloaded once and cached). A regular UTF-8 "
                                  f"file of at most {MAX_TEXT_LABEL}")
    p.add_argument("--preset", default="seed", choices=list(PRESETS),
                   help="; ".join(f"{name}: {text}" for name, text in PRESET_HELP.items()) + " (default: seed)")
    for f, owner in settings.all_fields(RunConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=settings.value_type(f, owner), help=f.metadata["help"],
                       choices=f.metadata["choices"])


def add_arm_flags(p):
    """--arms, --controls, --optimizers, --muon: which arms a grid trains (ablate, sweep)."""
    p.add_argument("--arms", help="comma-separated ARCHITECTURE+OPTIMIZER pairs, e.g. nanogpt+adamw,nanokimi+truemuon; "
                                  f"architectures: {', '.join(ARCHITECTURES)} (default: nanogpt and nanokimi, "
                                  "or the four --controls, with each of --optimizers)")
    p.add_argument("--controls", action="store_true",
                   help="the four architectures nanogpt, relu-matched, swiglu-matched, nanokimi (the controls match "
                        "NanoKimi's parameter count) instead of nanogpt and nanokimi")
    p.add_argument("--optimizers", default="adamw,truemuon",
                   help="comma-separated optimizers of every architecture (default: adamw,truemuon)")
    p.add_argument("--muon", action="store_true", help="add PyTorch's Muon to --optimizers")


def add_backend_flags(p):
    """--backend and --ray-address: where the runs train (backends.py)."""
    p.add_argument("--backend", default="local", choices=BACKENDS,
                   help="local: worker processes on this machine (default); ray: one Ray task per run, on the "
                        "cluster at --ray-address (needs: pip install -r requirements-ray.txt)")
    p.add_argument("--ray-address", help="HOST:PORT of a Ray cluster's head (default: $NANOKIMI_RAY_ADDRESS, else "
                                         "$RAY_ADDRESS; none: start a local Ray instance)")


def backend_for(args):
    """The backend the flags ask for; BackendError with one line when it cannot be had."""
    return make_backend(args.backend, getattr(args, "jobs", 1), args.ray_address)


def grid_progress(args, runs):
    """Grid-level progress (progress.py) with many runs in flight; one line per model otherwise."""
    if args.backend == "local" and args.jobs == 1:
        return Progress()
    from .running.progress import GridProgress
    return GridProgress(runs)


def chosen_arms(args):
    """The (architecture, optimizer) arms the arm flags ask for; SettingError when one is unknown."""
    from .experiments import ablation

    if args.arms:
        return ablation.parse_arms(args.arms)
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()] + (["muon"] if args.muon else [])
    architectures = ablation.CONTROLS if args.controls else ablation.DEFAULT_ARCHITECTURES
    return ablation.grid_arms(architectures, list(dict.fromkeys(optimizers)))  # the configs check the names


def grid_settings(args):
    """The settings of a grid command; (settings, base seed)."""
    chosen = training_settings(args)
    base_seed = chosen.pop("seed") or PRESETS[args.preset].seed
    return chosen, base_seed


def training_settings(args):
    """The settings given on the command line (None where a flag was not given), with --jobs sharing
    out the cores when --threads is not given."""
    chosen = {name: getattr(args, name) for name in settings.names(RunConfig)}
    if getattr(args, "jobs", 1) > 1 and chosen["threads"] is None:
        chosen["threads"] = threads_per_job(args.jobs)
    return chosen


def build_parser():
    parser = Parser(prog="python -m nanokimi", description=(
        "nanokimi: does a Kimi-style model (MoE + TrueMuon) beat a plain GPT (AdamW), and at what cost?"))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser,
                                metavar="{compare,ablate,sweep,bench,runner}")

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
                                   "of NanoKimi - NanoGPT into parameters, activation and routing, each with a 95%% "
                                   "confidence interval, a paired t-test p-value and Holm's correction. Writes "
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
                                   "arm's original: AdamW's lr, or TrueMuon/Muon's matrix lr with the AdamW part at "
                                   "its original lr) on tuning seeds that are never confirmation seeds, choose the "
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


def fail(command, message):
    print(f"nanokimi {command}: error: {message}", file=sys.stderr)
    return 2


def compare_main(args):
    chosen = training_settings(args)
    try:
        runs = comparison_runs(args.preset, args.gpt_optimizer, args.kimi_optimizer, data=resolve_source(args.data),
                               **chosen)
        check_data(runs)
    except (ValueError, DataError) as err:
        return fail("compare", err)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return fail("compare", f"cannot create --out directory {out}: {err.strerror}")

    try:
        backend = backend_for(args)
    except BackendError as err:
        return fail("compare", err)
    each = f"{runs[0].threads} thread{'s' if runs[0].threads > 1 else ''} each"
    if args.jobs > 1:
        print(f"NanoGPT and NanoKimi at the same time, {each}", file=sys.stderr)
    interrupted = False
    try:
        with Progress() as progress:  # a row per model, both at once with --jobs 2
            results = backend.run(runs, on_event=progress)
    except KeyboardInterrupt:
        interrupted = True
        results = []
    finally:
        backend.close()
    if interrupted and not results:
        print("interrupted before any model finished; nothing written", file=sys.stderr)
        return 130
    from .results import charts, report  # pandas and altair: only once there is something to write
    from .running.run_data import history_frame

    rows = [r.results for r in results]
    history = [row for r in results for row in r.history]
    (out / "results.csv").write_text(report.results_csv(rows, runs, dataset=args.data))
    (out / "history.csv").write_text(report.history_csv(history))
    print()
    print(report.report_text(rows))
    print()
    print(report.verdict(rows))
    shared = [r for r in rows if r.get("shared_with")]
    if shared:
        print(f"\n{' and '.join(r['model'] for r in shared)} trained at the same time (--jobs {args.jobs}, {each}): "
              "their step times compare with each other, not with runs made alone.")
    finished = [r for r in rows if r.get("status") in MEASURED]
    if finished:
        frame = history_frame(history, stored=False)
        charts.save_png(charts.comparison_figure(finished, frame), out / "comparison_graph.png")
    print(f"\nwrote {out / 'results.csv'}, {out / 'history.csv'}" + (f", {out / 'comparison_graph.png'}" if finished else ""))
    failed = [r for r in rows if r.get("status") == FAILED]
    return 1 if failed else 0


def ablate_main(args):
    from .experiments import ablation

    chosen, base_seed = grid_settings(args)
    try:
        arms = chosen_arms(args)
        runs = ablation.ablation_runs(arms, args.seeds, base_seed, data=resolve_source(args.data),
                                      preset_name=args.preset, **chosen)
        check_data(runs)
        out = make_out(args.out)
        backend = backend_for(args)
    except (ValueError, DataError, OSError, BackendError) as err:
        return fail("ablate", err)
    print(f"{len(runs)} runs: {len(arms)} arms x {args.seeds} seeds, {order_text(args, backend, runs)}", file=sys.stderr)
    try:
        with grid_progress(args, runs) as progress:
            results, reused = ablation.train_grid(runs, out, jobs=args.jobs, on_event=progress, backend=backend)
    except KeyboardInterrupt:
        results, reused = list(ablation.load_finished(out, runs).values()), 0
    except BackendError as err:
        return fail("ablate", err)
    finally:
        backend.close()
    if reused:
        print(f"{reused} of {len(runs)} runs were already trained in {out / 'runs'}: not trained again", file=sys.stderr)
    if not results:
        print("interrupted before any run finished; nothing written", file=sys.stderr)
        return 130
    if len(results) < len(runs):
        print(f"stopped after {len(results)} of {len(runs)} runs; summarising those", file=sys.stderr)
    rows, summary = ablation.write_files(out, results, args.target)
    print()
    print(ablation.summary_text(summary))
    print(f"\nwrote {out / 'ablation.csv'}, {out / 'ablation_summary.csv'}, {out / 'ablation.png'}")
    return 1 if any(r.status == FAILED for r in results) else 0


def order_text(args, backend, runs):
    """How the runs will train, for the line before they start."""
    if backend.name == "ray":
        where = backend.address or "a local Ray instance"
        return f"as Ray tasks on {where}, {backend.threads(runs[0])} CPUs (threads) each"
    return "one after the other" if args.jobs == 1 else f"{args.jobs} at a time, {runs[0].threads} threads each"


def make_out(path):
    """The --out directory, created; OSError with a sentence when it cannot be."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create --out directory {out}: {err.strerror}") from None
    return out


def lr_factors(text):
    """--lr-factors: "1/9,1/3,1,3,9" -> [1/9, 1/3, 1.0, 3.0, 9.0]; ValueError unless each is a positive number."""
    try:
        factors = [float(Fraction(f.strip())) for f in text.split(",") if f.strip()]
    except (ValueError, ZeroDivisionError):
        factors = []
    if not factors or min(factors) <= 0 or not all(math.isfinite(f) for f in factors):
        raise ValueError(f"--lr-factors must be positive numbers or fractions such as 1/9, got {text!r}")
    return factors


def sweep_main(args):
    from .experiments import ablation, sweep
    from .results import charts

    import pandas as pd

    chosen, base_seed = grid_settings(args)
    try:
        arms = chosen_arms(args)
        factors = lr_factors(args.lr_factors)
        grid = {"data": resolve_source(args.data), "preset_name": args.preset, **chosen}
        tuning = sweep.tuning_runs(arms, factors, args.tuning_seeds, base_seed, **grid)
        check_data(tuning)
        out = make_out(args.out)
        backend = backend_for(args)
    except (ValueError, DataError, OSError, BackendError) as err:
        return fail("sweep", err)
    total = len(arms) * (len(factors) * args.tuning_seeds + 2 * args.seeds)
    print(f"up to {total} runs: {len(arms)} arms x {len(factors)} learning rates x {args.tuning_seeds} tuning seed(s), "
          f"then {args.seeds} confirmation seeds at the chosen and the original learning rates", file=sys.stderr)
    # The confirmation runs at the chosen learning rates are known only once tuning has chosen: the
    # grid view lists the tuning runs and those at the original rates, and adds the others as they start.
    _, original = sweep.confirmation_runs(arms, {}, args.seeds, base_seed, **grid)
    try:
        with grid_progress(args, tuning + original) as progress:
            tuned, chosen_lrs, at_tuned, at_original = sweep.run_sweep(
                arms, out, args.seeds, base_seed, factors, args.tuning_seeds, args.jobs,
                on_event=progress, backend=backend, **grid)
    except KeyboardInterrupt:
        print(f"interrupted: the runs that finished are kept in {out / 'runs'}; run again to go on", file=sys.stderr)
        return 130
    except BackendError as err:
        return fail("sweep", err)
    finally:
        backend.close()
    rows = sweep.sweep_rows(tuned)
    frame = pd.DataFrame(rows)
    frame[sweep.SWEEP_COLUMNS_FIRST + [c for c in frame.columns if c not in sweep.SWEEP_COLUMNS_FIRST]].to_csv(
        out / "sweep.csv", index=False)
    choice = pd.DataFrame([{"arm": arm, **c, "tried": " ".join(f"{lr:.3g}" for lr in c["tried"])}
                           for arm, c in chosen_lrs.items()])
    choice.to_csv(out / "chosen_lrs.csv", index=False)
    charts.save_png(charts.lr_sweep_chart(frame), out / "sweep.png")
    print("\nchosen learning rates (lowest mean final validation loss on the tuning seeds):")
    for arm, c in chosen_lrs.items():
        edge = "  (at the edge of the grid: the best may lie beyond it)" if c["at_edge"] else ""
        print(f"  {arm:<24} {c['tuned']} = {c['lr']:.3g}  final val loss {c['loss']:.4f}{edge}")
    for name, results in (("tuned", at_tuned), ("original", at_original)):
        (out / name).mkdir(exist_ok=True)
        _, summary = ablation.write_files(out / name, results, args.target)
        print(f"\nat the {'tuned' if name == 'tuned' else 'original'} learning rates:")
        print("\n".join(r["note"] for r in summary if r["kind"] == "effect"))
    print(f"\nwrote {out / 'sweep.csv'}, {out / 'chosen_lrs.csv'}, {out / 'sweep.png'}, {out / 'tuned'}/, "
          f"{out / 'original'}/")
    return 1 if any(r.status == FAILED for r in at_tuned + at_original) else 0


def bench_main(args):
    import json

    from .training.bench import bench, bench_text
    optimizers = {"gpt_optimizer": args.optimizer or "adamw", "kimi_optimizer": args.optimizer or "truemuon"}
    if args.warmup < 0:
        return fail("bench", f"--warmup must be 0 or more, got {args.warmup}")
    try:
        runs = comparison_runs(args.preset, data=resolve_source(args.data), **optimizers, **training_settings(args))
        result = bench(runs[0 if args.model == "nanogpt" else 1], steps=args.steps, warmup=args.warmup)
    except (ValueError, DataError) as err:
        return fail("bench", err)
    print(bench_text(result))
    if args.json:
        print(json.dumps(result))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "runner":
        from .running import runner  # the app's runner: not needed by compare
        return runner.main()
    if args.command == "compare":
        return compare_main(args)
    if args.command == "bench":
        return bench_main(args)
    if args.command == "ablate":
        return ablate_main(args)
    if args.command == "sweep":
        return sweep_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
