"""`ablate` and `sweep`: grids of arms (architecture x optimizer) over seeds, and learning rates tuned
per arm before they are compared. Both resume: run again with the same --out, only what is missing
or failed trains.
"""

import sys

from ..experiments.compare import check_data
from ..running.backends import BackendError
from ..running.guards import GuardError
from ..running.progress import GridProgress, ModelProgress
from ..training.data import DataError, resolve_source
from .args import backend_for, check_machine, chosen_arms, fail, grid_settings, lr_factors, make_out, say_failures


def grid_progress(args, runs):
    """Grid-level progress (progress.py) with many runs in flight; one line per model otherwise."""
    if args.backend == "local" and args.jobs == 1:
        return ModelProgress()
    return GridProgress(runs)


def ablate_main(args):
    from ..experiments import ablation
    from ..results import ablation_files
    from ..running import grid

    chosen, base_seed = grid_settings(args)
    try:
        arms = chosen_arms(args)
        runs = ablation.ablation_runs(arms, args.seeds, base_seed, data=resolve_source(args.data),
                                      preset_name=args.preset, **chosen)
        check_machine(runs, check_data(runs), args)
        out = make_out(args.out)
        backend = backend_for(args)
    except (ValueError, DataError, GuardError, BackendError) as err:
        return fail("ablate", err)
    print(f"{len(runs)} runs: {len(arms)} arms x {args.seeds} seeds, {order_text(args, backend, runs)}", file=sys.stderr)
    try:
        with grid_progress(args, runs) as progress:
            results, reused = grid.train_grid(runs, out, jobs=args.jobs, on_event=progress, backend=backend)
    except KeyboardInterrupt:
        results, reused = list(grid.load_finished(out, runs).values()), 0
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
    rows, summary = ablation_files.write_files(out, results, args.target)
    print()
    print(ablation_files.summary_text(summary))
    print(f"\nwrote {out / 'ablation.csv'}, {out / 'ablation_summary.csv'}, {out / 'ablation.png'}")
    return say_failures(results)


def order_text(args, backend, runs):
    """How the runs will train, for the line before they start."""
    if backend.name == "ray":
        where = backend.address or "a local Ray instance"
        return f"as Ray tasks on {where}, {backend.threads(runs[0])} CPUs (threads) each"
    return "one after the other" if args.jobs == 1 else f"{args.jobs} at a time, {runs[0].threads} threads each"


def sweep_main(args):
    from ..experiments import sweep
    from ..results import ablation_files
    from ..results.charts.ablation import lr_sweep_chart
    from ..results.charts.images import save_png
    from ..running.grid import run_sweep

    import pandas as pd

    chosen, base_seed = grid_settings(args)
    try:
        arms = chosen_arms(args)
        factors = lr_factors(args.lr_factors)
        grid = {"data": resolve_source(args.data), "preset_name": args.preset, **chosen}
        tuning = sweep.tuning_runs(arms, factors, args.tuning_seeds, base_seed, **grid)
        check_machine(tuning, check_data(tuning), args)
        out = make_out(args.out)
        backend = backend_for(args)
    except (ValueError, DataError, GuardError, BackendError) as err:
        return fail("sweep", err)
    total = len(arms) * (len(factors) * args.tuning_seeds + 2 * args.seeds)
    print(f"up to {total} runs: {len(arms)} arms x {len(factors)} learning rates x {args.tuning_seeds} tuning seed(s), "
          f"then {args.seeds} confirmation seeds at the chosen and the original learning rates", file=sys.stderr)
    # The confirmation runs at the chosen learning rates are known only once tuning has chosen: the
    # grid view lists the tuning runs and those at the original rates, and adds the others as they start.
    _, original = sweep.confirmation_runs(arms, {}, args.seeds, base_seed, **grid)
    try:
        with grid_progress(args, tuning + original) as progress:
            tuned, chosen_lrs, at_tuned, at_original = run_sweep(
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
    save_png(lr_sweep_chart(frame), out / "sweep.png")
    print("\nchosen learning rates (lowest mean final validation loss on the tuning seeds):")
    for arm, c in chosen_lrs.items():
        edge = "  (at the edge of the grid: the best may lie beyond it)" if c["at_edge"] else ""
        print(f"  {arm:<24} {c['tuned']} = {c['lr']:.3g}  final val loss {c['loss']:.4f}{edge}")
    for name, results in (("tuned", at_tuned), ("original", at_original)):
        (out / name).mkdir(exist_ok=True)
        _, summary = ablation_files.write_files(out / name, results, args.target)
        print(f"\nat the {'tuned' if name == 'tuned' else 'original'} learning rates:")
        print("\n".join(r["note"] for r in summary if r["kind"] == "effect"))
    print(f"\nwrote {out / 'sweep.csv'}, {out / 'chosen_lrs.csv'}, {out / 'sweep.png'}, {out / 'tuned'}/, "
          f"{out / 'original'}/")
    say_failures(tuned)  # a failed tuning run counts as the worst learning rate; its cause is still said
    return say_failures(at_tuned + at_original)
