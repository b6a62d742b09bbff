"""`compare` and `bench`: the original comparison of NanoGPT and NanoKimi, and the timing of one model.

`compare` reproduces the original comparison script (with `--preset seed`) and goes beyond it:
any optimizer on either model, top-k routing, honest timing and memory, and three files in --out.
"""

import sys

from ..experiments.compare import check_data, comparison_runs
from ..running.backends import BackendError
from ..running.guards import GuardError
from ..running.progress import ModelProgress
from ..status import MEASURED
from ..training.data import DataError, resolve_source
from .args import backend_for, check_machine, fail, make_out, say_failures, training_settings


def compare_main(args):
    chosen = training_settings(args)
    try:
        runs = comparison_runs(args.preset, args.gpt_optimizer, args.kimi_optimizer, data=resolve_source(args.data),
                               **chosen)
        check_machine(runs, check_data(runs), args)
    except (ValueError, DataError, GuardError) as err:
        return fail("compare", err)
    try:
        out = make_out(args.out)
        backend = backend_for(args)
    except (GuardError, BackendError) as err:
        return fail("compare", err)
    each = f"{runs[0].threads} thread{'s' if runs[0].threads > 1 else ''} each"
    if args.jobs > 1:
        print(f"NanoGPT and NanoKimi at the same time, {each}", file=sys.stderr)
    interrupted = False
    try:
        with ModelProgress() as progress:  # a row per model, both at once with --jobs 2
            results = backend.run(runs, on_event=progress)
    except KeyboardInterrupt:
        interrupted = True
        results = []
    finally:
        backend.close()
    if interrupted and not results:
        print("interrupted before any model finished; nothing written", file=sys.stderr)
        return 130
    from ..results import report  # pandas and altair: only once there is something to write
    from ..results.charts.comparison import comparison_figure
    from ..results.charts.images import save_png
    from ..running.run_data import history_frame

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
        save_png(comparison_figure(finished, frame), out / "comparison_graph.png")
    print(f"\nwrote {out / 'results.csv'}, {out / 'history.csv'}" + (f", {out / 'comparison_graph.png'}" if finished else ""))
    return say_failures(results)


def bench_main(args):
    import json

    from ..training.bench import bench, bench_text
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
