"""Run the benchmarks: ``python -m bench [delivery|handles|transactional|reload|streams|userpath|all]
[--backends ...]`` (memory, sqlite, redis, postgres)."""

from __future__ import annotations

import argparse
import sys

from . import delivery, handles, transactional


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the selected benchmarks."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("which", nargs="?", default="all",
                        choices=["all", "delivery", "handles", "transactional", "reload", "streams", "userpath"])
    parser.add_argument("--backends", default="memory,sqlite,redis,postgres")
    parser.add_argument("--events", type=int, default=None, help="events per run (delivery 20,000; userpath 10,000)")
    parser.add_argument("--chain-runs", type=int, default=None, help="chains per run (delivery 300; userpath 500)")
    parser.add_argument("--clients", type=int, default=1000, help="streams: WebSocket clients on one group")
    parser.add_argument("--rounds", type=int, default=5, help="streams: updates to measure")
    parser.add_argument("--idle", type=float, default=10.0, help="streams: seconds of idle CPU measurement")
    parser.add_argument("--trials", type=int, default=3, help="userpath: runs per figure (median, min, max)")
    parser.add_argument("--idle-window", type=float, default=5.0, help="userpath: seconds of idle CPU measured")
    parser.add_argument("--scale", default="1,2,4", help="userpath: worker process counts of the scaling run")
    parser.add_argument("--parts", default="path,idle,example,scale", help="userpath: which parts to run")
    args = parser.parse_args(argv)
    if args.which in ("all", "delivery"):
        delivery.main(args.backends.split(","), args.events or 20_000, args.chain_runs or 300)
    if args.which in ("all", "handles"):
        handles.main(args.backends.split(","), args.events or 20_000)
    if args.which in ("all", "transactional"):
        transactional.main(args.backends.split(","), args.events or 20_000, args.chain_runs or 300)
    if args.which in ("all", "streams"):
        from . import streams

        streams.main(args.clients, args.rounds, args.idle)
    if args.which in ("all", "reload"):
        try:
            from . import reload
        except ImportError:
            print("reload benchmark not available", file=sys.stderr)
        else:
            reload.main()
    if args.which in ("all", "userpath"):
        from . import userpath

        names = [b for b in args.backends.split(",") if b in userpath.BACKENDS]
        userpath.main(names, args.events or 10_000, args.chain_runs or 500, args.trials, args.idle_window,
                      [int(w) for w in args.scale.split(",")], set(args.parts.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
