"""Table contracts: every table's name, location, schema, commit metadata and writer identity, in one place.

Layers meet only through these tables, so what a table holds and how its
metadata is spelled is written here once and imported by every reader and
writer (docs/architecture.md §3):

* :mod:`~lambdaflow.contracts.paths` — names and locations under the storage root, SQL names;
* :mod:`~lambdaflow.contracts.commits` — commit metadata keys, offsets, the speed layer's app id;
* :mod:`~lambdaflow.contracts.master` — ``master/events`` and ``master/labels``, the first-copy rule;
* :mod:`~lambdaflow.contracts.speed` — ``quarantine``, ``predictions``, ``speed/<view>``;
* :mod:`~lambdaflow.contracts.batch` — ``batch/<view>``, the watermark rule, training set, runs.
"""

from __future__ import annotations

__all__ = ["batch", "commits", "master", "paths", "speed"]
