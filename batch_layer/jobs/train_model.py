"""spark-submit entry point: train XGBoost on the training set, evaluate, register, promote if better.

spark-submit --master yarn batch_layer/jobs/train_model.py --profile cluster
"""

from __future__ import annotations

import argparse

from batch_layer.jobs import finish
from batch_layer.train import train
from lambdaflow.config import load_settings
from lambdaflow.spark import get_spark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile")
    parser.add_argument("--pipeline")
    parser.add_argument("--master", dest="spark_master")
    parser.add_argument("--shuffle-labels", action="store_true", help="train on random labels: a deliberately worse model")
    args = parser.parse_args(argv)
    settings = load_settings(args.profile, args.pipeline)
    spark = get_spark(settings.profile.spark, app_name="lambdaflow-train", master=args.spark_master)
    print(train(settings, spark, shuffle_labels=args.shuffle_labels).to_json())
    return 0


if __name__ == "__main__":
    finish(main())
