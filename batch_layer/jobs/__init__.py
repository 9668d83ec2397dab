"""spark-submit entry points of the batch layer (one module per job)."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def finish(code: int) -> NoReturn:
    """Stop Spark and leave without interpreter teardown.

    The job's work is committed by then. Native thread pools (Arrow, delta-rs)
    can abort the process while Python tears down (``terminate called without
    an active exception``, exit 134), which a scheduler would report as a
    failed job and retry; leaving with ``os._exit`` after flushing avoids that.
    """
    try:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
