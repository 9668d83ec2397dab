"""spark-submit entry point: online/offline consistency of served feature vectors (batch_layer/consistency.py).

spark-submit --master yarn batch_layer/jobs/check_consistency.py --profile cluster [--sample 0.05] [--fail-on-mismatch]

Exits with 1 under ``--fail-on-mismatch`` when any served value differs from its offline recompute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from batch_layer.consistency import check_consistency
from batch_layer.jobs import finish
from lambdaflow.config import load_settings
from lambdaflow.contracts.consistency import DEFAULT_MAX_ROWS, DEFAULT_SAMPLE
from lambdaflow.spark import get_spark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile")
    parser.add_argument("--pipeline")
    parser.add_argument("--master", dest="spark_master")
    parser.add_argument("--master-version", type=int)
    parser.add_argument("--sample", type=float, default=DEFAULT_SAMPLE)
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)
    parser.add_argument("--fail-on-mismatch", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings(args.profile, args.pipeline)
    spark = get_spark(settings.profile.spark, app_name="lambdaflow-consistency", master=args.spark_master)
    report = check_consistency(settings, spark, args.sample, args.max_rows, args.master_version)
    print(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    return 1 if args.fail_on_mismatch and report.mismatches else 0


if __name__ == "__main__":
    finish(main())
