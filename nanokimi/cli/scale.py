"""`scale`: the arms trained at every rung of a size ladder, their loss-against-compute curves fitted,
and the compute multiplier at every size (experiments/scaling.py, experiments/fits.py).

Before anything trains it says what the ladder costs: its training FLOPs and the time it should take
here, `--jobs` at a time. The time is running/eta.py's rough estimate from FLOPs (a reference machine
like this 2-core one, per kind of feed-forward and optimizer), scaled per arm by the step times of
this ladder's runs already kept in --out/runs/ when there are some. A ladder longer than
LONG_LADDER_S says so and prints the same command on a Ray cluster. Resumable as every grid: run
again with the same --out, only what is missing or failed trains.
"""

import shlex
import statistics
import sys

from .args import backend_for, check_machine, fail, make_out, say_failures, training_settings
from .grids import grid_progress, order_text
from ..experiments.compare import check_data
from ..running.backends import BackendError
from ..running.guards import GuardError
from ..training.data import DataError, resolve_source

LONG_LADDER_S = 3 * 3600  # "more than a few hours on this machine": suggest Ray


def parse_widths(text):
    """--widths: "32,48,64" -> [32, 48, 64]; ValueError unless each is a whole number (scaling.rung checks the rest)."""
    try:
        widths = sorted({int(w) for w in text.split(",") if w.strip()})
    except ValueError:
        widths = []
    if not widths:
        raise ValueError(f"--widths must be comma-separated whole numbers such as 32,48,64, got {text!r}")
    return widths


def ladder(args):
    """(the ladder's RunConfigs, its arms): the preset's, with the flags over it; ValueError/SettingError."""
    from ..experiments import ablation, scaling
    from ..experiments.arms import Arm

    preset = scaling.PRESETS[args.preset]
    chosen = training_settings(args)
    owned = [name for name in scaling.LADDER_SETTINGS if chosen.pop(name) is not None]
    if owned:
        raise ValueError(f"{', '.join('--' + n.replace('_', '-') for n in owned)}: the ladder sets "
                         f"{'these' if len(owned) > 1 else 'this'} per rung; use --widths and --tokens-per-param")
    arms = ablation.parse_arms(args.arms) if args.arms else [Arm.parse(key) for key in preset.arms]
    widths = parse_widths(args.widths) if args.widths else preset.widths
    base_seed = chosen.pop("seed") or 1337
    eval_iters = chosen.pop("eval_iters") or preset.eval_iters
    runs = scaling.scale_runs(arms, widths, args.tokens_per_param or preset.tokens_per_param, args.seeds, base_seed,
                              data=resolve_source(args.data), eval_iters=eval_iters, evaluations=preset.evaluations,
                              **chosen)
    return runs, arms


def estimate_s(runs, kept, jobs):
    """Seconds the `runs` not yet `kept` ({name: RunResult}) should take here, `jobs` at a time: eta's
    reference rates scaled, per arm, by how this ladder's kept runs of that arm compared with theirs."""
    from ..running import eta

    ratios = {}
    for result in kept.values():
        measured = eta.finished_rates(result.config, result.results)
        if measured:
            ratios.setdefault(result.config.arm, []).append(measured.step_s / eta.reference_rates(result.config).step_s)
    everyone = [r for found in ratios.values() for r in found]
    scale = {arm: statistics.median(found) for arm, found in ratios.items()}
    default = statistics.median(everyone) if everyone else 1.0
    seconds = [eta.reference_rates(run).seconds(run) * scale.get(run.arm, default)
               for run in runs if run.name not in kept]
    return eta.in_slots([], seconds, jobs)


def ray_command(args):
    """The same ladder as a command on a Ray cluster."""
    words = ["python", "-m", "nanokimi", "scale", "--preset", args.preset, "--seeds", str(args.seeds), "--out", args.out]
    for flag in ("data", "arms", "widths", "tokens_per_param"):
        if getattr(args, flag) is not None:
            words += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    return shlex.join(words) + " --backend ray --ray-address HOST:PORT"


def cost_text(runs, corpus, out, args):
    """The lines said before training: runs, FLOPs, the estimate here, and Ray where it is long."""
    from ..experiments.scaling import planned_flops
    from ..running import eta, grid

    kept = grid.load_finished(out, runs, warn=lambda _: None)
    flops = sum(planned_flops(run, corpus.vocab_size) for run in runs)
    left = sum(planned_flops(run, corpus.vocab_size) for run in runs if run.name not in kept)
    rungs = sorted({run.model.n_embd for run in runs})
    lines = [f"{len(runs)} runs: {len({run.arm for run in runs})} arms x {len(rungs)} rungs (n_embd "
             f"{', '.join(map(str, rungs))}) x {args.seeds} seeds, {min(r.iters for r in runs):,} to "
             f"{max(r.iters for r in runs):,} steps; planned training FLOPs {flops:.3g}"
             + (f", of which {left:.3g} still to train ({len(runs) - len(kept)} runs)" if kept else "")]
    if len(kept) == len(runs):
        return lines + [f"every run is kept in {out / 'runs'}: nothing to train"]
    seconds = estimate_s(runs, kept, args.jobs if args.backend == "local" else 1)
    where = f"{args.jobs} at a time" if args.backend == "local" else "one at a time on one CPU"
    lines.append(f"estimated time here: about {eta.clock(seconds)} ({where}; rough: from FLOPs at a reference "
                 f"machine's step rates{', scaled by the runs kept here' if kept else ''})")
    if seconds > LONG_LADDER_S and args.backend == "local":
        lines.append(f"that is more than {LONG_LADDER_S // 3600} hours on this machine; on a Ray cluster: "
                     f"{ray_command(args)}")
    return lines


def scale_main(args):
    from ..results import scale_files
    from ..experiments.scaling import multiplier_pairs
    from ..running import grid

    try:
        runs, arms = ladder(args)
        corpus = check_data(runs)
        check_machine(runs, corpus, args)
        out = make_out(args.out)
        backend = backend_for(args)
    except (ValueError, DataError, GuardError, BackendError) as err:
        return fail("scale", err)
    cost = cost_text(runs, corpus, out, args)
    if not cost[-1].endswith("nothing to train"):
        cost.append(f"training {order_text(args, backend, runs)}")
    print("\n".join(cost), file=sys.stderr)
    try:
        with grid_progress(args, runs) as progress:
            results, reused = grid.train_grid(runs, out, jobs=args.jobs, on_event=progress, backend=backend)
    except KeyboardInterrupt:
        results, reused = list(grid.load_finished(out, runs).values()), 0
    except BackendError as err:
        return fail("scale", err)
    finally:
        backend.close()
    if reused:
        print(f"{reused} of {len(runs)} runs were already trained in {out / 'runs'}: not trained again", file=sys.stderr)
    if not results:
        print("interrupted before any run finished; nothing written", file=sys.stderr)
        return 130
    if len(results) < len(runs):
        print(f"stopped after {len(results)} of {len(runs)} runs; fitting those", file=sys.stderr)
    _, fits, found = scale_files.write_files(out, results, [(a.key, b.key) for a, b in multiplier_pairs(arms)])
    print()
    print(scale_files.summary_text(fits, found))
    print(f"\nwrote {out / 'scale.csv'}, {out / 'scale_fits.csv'}, {out / 'scale.png'}")
    return say_failures(results)
