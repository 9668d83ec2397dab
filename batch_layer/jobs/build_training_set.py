"""spark-submit entry point: build the point-in-time training set from one master snapshot.

spark-submit --master yarn batch_layer/jobs/build_training_set.py --profile cluster [--master-version V] [--cutoff ISO]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from batch_layer.jobs import finish
from batch_layer.training import build_training_set, report_dict
from lambdaflow.config import load_settings
from lambdaflow.spark import get_spark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile")
    parser.add_argument("--pipeline")
    parser.add_argument("--master", dest="spark_master")
    parser.add_argument("--master-version", type=int)
    parser.add_argument("--cutoff", help="ISO time of what is known (default: the snapshot's ingest time)")
    args = parser.parse_args(argv)
    settings = load_settings(args.profile, args.pipeline)
    spark = get_spark(settings.profile.spark, app_name="lambdaflow-training-set", master=args.spark_master)
    cutoff = dt.datetime.fromisoformat(args.cutoff).astimezone(dt.timezone.utc) if args.cutoff else None
    print(json.dumps(report_dict(build_training_set(settings, spark, args.master_version, cutoff)), indent=2))
    return 0


if __name__ == "__main__":
    finish(main())
