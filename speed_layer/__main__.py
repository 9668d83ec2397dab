"""`python -m speed_layer [--profile P] [--pipeline F]`: run the speed layer until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import sys

from lambdaflow.config import for_instance, load_settings
from lambdaflow.errors import LambdaflowError
from lambdaflow.spark import finish
from speed_layer.runner import main as run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speed_layer", description=__doc__.splitlines()[0])
    parser.add_argument("--profile")
    parser.add_argument("--pipeline")
    parser.add_argument("--max-batches", type=int)
    parser.add_argument("--idle-exit", type=float, help="stop after this many seconds without records")
    parser.add_argument("--instance", type=int, help="this instance's identity, 0 .. speed.instances-1 (default: speed.instance)")
    args = parser.parse_args(argv)
    try:
        return run(for_instance(load_settings(args.profile, args.pipeline), args.instance), args.max_batches, args.idle_exit)
    except LambdaflowError as exc:  # an expected stop (bad config, a gap in the log): one line, its exit code
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    # everything is committed by now: leave without a teardown that native pools could abort
    finish(main())
