"""The command line: `python -m nanokimi compare | ablate | sweep | scale | bench | runner`.

One module per family of subcommands: compare.py (`compare`, `bench`), grids.py (`ablate`,
`sweep`), scale.py (`scale`); args.py holds the parser and what the flags resolve to. `runner` is the app's
(running/runner.py). Heavy libraries (pandas, altair) load only once there are results to write.
"""

from . import compare, grids, scale
from .args import build_parser, lr_factors  # noqa: F401 (read from here by tests)
from ..running.progress import ModelProgress as Progress  # noqa: F401 (the CLI's progress, read from here by tests)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "runner":
        from ..running import runner  # the app's runner: not needed by compare
        return runner.main()
    if args.command == "compare":
        return compare.compare_main(args)
    if args.command == "bench":
        return compare.bench_main(args)
    if args.command == "ablate":
        return grids.ablate_main(args)
    if args.command == "sweep":
        return grids.sweep_main(args)
    if args.command == "scale":
        return scale.scale_main(args)
    return 2
