"""Run the benchmarks: ``python -m bench [delivery|handles|transactional|reload|streams|all] [--backends ...]``
(memory, sqlite, redis, postgres)."""

from __future__ import annotations

import argparse
import sys

from . import delivery, handles, transactional


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the selected benchmarks."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("which", nargs="?", default="all",
                        choices=["all", "delivery", "handles", "transactional", "reload", "streams"])
    parser.add_argument("--backends", default="memory,sqlite,redis,postgres")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--chain-runs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1000, help="streams: WebSocket clients on one group")
    parser.add_argument("--rounds", type=int, default=5, help="streams: updates to measure")
    parser.add_argument("--idle", type=float, default=10.0, help="streams: seconds of idle CPU measurement")
    args = parser.parse_args(argv)
    if args.which in ("all", "delivery"):
        delivery.main(args.backends.split(","), args.events, args.chain_runs)
    if args.which in ("all", "handles"):
        handles.main(args.backends.split(","), args.events)
    if args.which in ("all", "transactional"):
        transactional.main(args.backends.split(","), args.events, args.chain_runs)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
