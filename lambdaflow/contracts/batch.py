"""The batch layer's tables: ``batch/<view>``, ``batch/_training_set``, ``batch/_runs``, and how W is read.

The watermark rule is stated here once. The W of a ``batch/<view>`` snapshot is
the largest ``_batch_watermark`` among its rows, or :data:`NO_WATERMARK` when it
has none — exactly what the serving SQL computes
(``serving_layer.sql.watermark_sql``). It is read from the rows, never from
"the newest commit": maintenance (compaction, checkpoints) adds commits that
carry no watermark, and a reader that looked there would take W = -1 and count
every unexpired speed partial twice. See docs/architecture.md §4 (merge rule).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import Settings
from lambdaflow.contracts.commits import WATERMARK_KEY
from lambdaflow.contracts.paths import batch_view, table_uri
from lambdaflow.errors import TableError
from lambdaflow.features import FeatureFunction
from lambdaflow.schemas import BATCH_WATERMARK, INGEST_SEQ, arrow_type
from lambdaflow.tables import Snapshot, Table
from lambdaflow.views import CompiledView

__all__ = [
    "LABEL",
    "NO_WATERMARK",
    "RUNS_SCHEMA",
    "batch_table_schema",
    "batch_view_versions",
    "batch_watermark",
    "expiry_horizon",
    "publish_history",
    "published_commit",
    "training_schema",
    "view_fingerprint",
]

#: W before the first batch run: every speed partial is newer.
NO_WATERMARK = -1
#: ``batch/_training_set``: the label column (1 when a label arrived by the cut-off).
LABEL = "label"

#: ``batch/_runs``: one row per completed batch cycle.
RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("master_version", pa.int64()),
        ("watermark", pa.int64()),
        ("published_at", pa.timestamp("us", tz="UTC")),
        ("views", pa.string()),
    ]
)


def view_fingerprint(view: CompiledView) -> str:
    """A short hash of a view's definition: a changed definition never mixes with old rows."""
    text = view.spec.model_dump_json() + view.event_schema.to_string()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def batch_table_schema(view: CompiledView) -> pa.Schema:
    """``batch/<view>``: the view's partial state plus the watermark it was computed at."""
    return view.state_schema.append(pa.field(BATCH_WATERMARK, pa.int64(), False))


def batch_watermark(rows: Snapshot | pa.Table) -> int:
    """W of a ``batch/<view>`` snapshot (or of rows read from one): max ``_batch_watermark``, -1 when empty."""
    table = rows if isinstance(rows, pa.Table) else rows.to_arrow(columns=[BATCH_WATERMARK])
    if table.num_rows == 0:
        return NO_WATERMARK
    value = pc.max(table.column(BATCH_WATERMARK)).as_py()
    return NO_WATERMARK if value is None else int(value)


def published_commit(table: Table, version: int | None = None) -> dict[str, Any]:
    """The commit that published the rows of ``table`` as of ``version`` (default: latest).

    That is the newest commit at or before ``version`` carrying a watermark; later maintenance
    commits (compaction, checkpoints) change files, never rows, and carry none.

    Raises:
        TableMissingError: the table does not exist.
        TableError: nothing was published up to that version.
    """
    for commit in table.history():
        if version is not None and int(commit.get("version", -1)) > version:
            continue
        if WATERMARK_KEY in commit:
            return commit
    raise TableError(f"{table.uri}: nothing was published up to version {version if version is not None else 'latest'}")


def batch_view_versions(settings: Settings) -> dict[str, int | None]:
    """The current Delta version of every ``batch/<view>`` (None before the first publish).

    A changed version means a publish (or maintenance) since: state derived from the batch views is stale.
    """
    out: dict[str, int | None] = {}
    for view in settings.pipeline.views:
        table = Table(table_uri(settings.profile, batch_view(view.name)))
        out[view.name] = table.version() if table.exists() else None
    return out


def publish_history(table: Table) -> list[int]:
    """Watermarks of a batch view's publishes, newest first (maintenance commits carry none and are skipped)."""
    return [int(c[WATERMARK_KEY]) for c in table.history() if WATERMARK_KEY in c]


def expiry_horizon(table: Table) -> int:
    """Speed rows with ``_ingest_seq`` up to this are absorbed by the *previous* publish of a batch view.

    Expiry removes them, one batch run late (a reader holding the previous batch snapshot
    still needs everything after it), and the speed layer's duplicate check remembers event
    ids after it. :data:`NO_WATERMARK` until a view was published twice with different W.
    """
    distinct = sorted(set(publish_history(table)), reverse=True) if table.exists() else []
    return distinct[1] if len(distinct) > 1 else NO_WATERMARK


def training_schema(features: FeatureFunction, settings: Settings) -> pa.Schema:
    """Schema of ``batch/_training_set``: identity, time, features, label."""
    ev = settings.pipeline.events
    fields = ev.fields
    base = [
        pa.field(ev.id_column, arrow_type(fields[ev.id_column])),
        pa.field(ev.partition_key, arrow_type(fields[ev.partition_key])),
        pa.field(ev.time_column, pa.timestamp("us", tz="UTC")),
        pa.field(INGEST_SEQ, pa.int64()),
    ]
    return pa.schema(base + list(features.schema) + [pa.field(LABEL, pa.int32())])
