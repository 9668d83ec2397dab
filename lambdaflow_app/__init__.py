"""The Lambdaflow application: the ``lambdaflow`` command line, the demo, the local stack and the local Airflow.

This package sits above the layers (docs/architecture.md §2): it may import
the core and every layer; nothing imports it.
"""

from __future__ import annotations

__all__: list[str] = []
