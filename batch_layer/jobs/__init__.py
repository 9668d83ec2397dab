"""spark-submit entry points of the batch layer (one module per job).

Each job parses the same flags as its ``lambdaflow batch …`` command, calls the
same function, prints its report as JSON and leaves through
:func:`lambdaflow.spark.finish`.
"""

from __future__ import annotations

from lambdaflow.spark import finish

__all__ = ["finish"]
