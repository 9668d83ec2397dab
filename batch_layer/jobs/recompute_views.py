"""spark-submit entry point: recompute every batch view from one master snapshot.

    spark-submit --master yarn batch_layer/jobs/recompute_views.py --profile cluster [--master-version V] [--force]

Prints the run report as JSON on stdout.
"""

from __future__ import annotations

import argparse

from batch_layer.jobs import finish
from batch_layer.views import recompute_views
from lambdaflow.config import load_settings
from lambdaflow.spark import get_spark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="profile name or YAML path (default: $LAMBDAFLOW_PROFILE or local)")
    parser.add_argument("--pipeline", help="pipeline YAML (default: conf/pipeline.yaml)")
    parser.add_argument("--master", dest="spark_master", help="Spark master; spark-submit's --master wins when set")
    parser.add_argument("--master-version", type=int, help="Delta version of master/events to read (default: latest)")
    parser.add_argument("--view", action="append", dest="views", help="only this view (repeatable)")
    parser.add_argument("--force", action="store_true", help="recompute even if this snapshot was already computed")
    args = parser.parse_args(argv)
    settings = load_settings(args.profile, args.pipeline)
    spark = get_spark(settings.profile.spark, app_name="lambdaflow-batch-views", master=args.spark_master)
    report = recompute_views(settings, spark, args.master_version, args.views, args.force)
    print(report.to_json())
    return 0


if __name__ == "__main__":
    finish(main())
