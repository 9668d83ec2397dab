"""Who may commit the next micro-batch: the ``master/events`` commit as a compare-and-set.

A micro-batch's master commit is the table's next version or nothing
(:meth:`lambdaflow.tables.Table.append_next`), and that version is its sequence
number ``s``: every committed batch, of any writer, has its own ``s``, in commit
order. Against the version it is built on, the commit checks two claims, and a
writer that fails either is stale and stops with :class:`FencedError`,
committing nothing more:

* **identity**: its application id's last master commit is the one it made
  itself. A twin started with the same identity (same pipeline and consumer
  group) that committed in between is caught here. Every commit records when
  its process took up the identity (its epoch): the older process stops
  (:class:`FencedError`); the newer one, which read the tables before the
  older one's last commit, re-reads them and goes on (:class:`Resync`), so
  the process that replaced a zombie is not stopped by the zombie's last batch.
* **partitions**: every topic/partition in the batch stands, in the newest
  speed commit of *any* writer, where this writer believes it stands. Another
  writer (a second consumer group, or an instance the group gave the partition
  to) that ingested from it first is caught here.

Positions are cumulative over writers: each commit records the newest commit's
positions overlaid with its own batch's, so the newest speed commit alone says
where every partition stands (:func:`recorded_positions`). See
docs/operations.md §5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lambdaflow.contracts.commits import EPOCH_KEY, OFFSETS_END_KEY, OFFSETS_LAST_KEY, SEQ_KEY, Offsets
from lambdaflow.errors import FencedError
from lambdaflow.tables import Head

__all__ = ["Resync", "check_claims", "overlay", "recorded_positions"]

#: How many recent commits are read before the whole history is (maintenance commits sit in between).
RECENT_COMMITS = 20


class Resync(Exception):
    """An older process of this writer's identity committed after this one read the tables: re-read them.

    Raised before anything is committed; the batch in hand is dropped and read again from the new positions.
    """


def recorded_positions(history: Callable[[int | None], list[dict[str, Any]]]) -> tuple[Offsets, Offsets]:
    """Next offset and last-record fingerprint per topic/partition, from the newest speed commit of any writer.

    Args:
        history: commit infos newest first, given a limit (``Table.history`` or ``Head.history``).
    """
    for limit in (RECENT_COMMITS, None):
        commits = history(limit)
        for commit in commits:
            if OFFSETS_END_KEY in commit:
                return commit[OFFSETS_END_KEY], commit.get(OFFSETS_LAST_KEY, {})
        if limit is not None and len(commits) < limit:
            break
    return {}, {}


def overlay(base: Offsets, batch: Offsets) -> Offsets:
    """``base`` with the batch's topic/partitions replaced (a copy)."""
    out = {t: dict(p) for t, p in base.items()}
    for topic, parts in batch.items():
        out.setdefault(topic, {}).update(parts)
    return out


def check_claims(head: Head, app_id: str, last_seq: int, believed: Offsets, batch: Offsets, epoch: int) -> tuple[Offsets, Offsets]:
    """Check that this writer may commit on top of ``head``; return the recorded positions and fingerprints it builds on.

    Args:
        head: the master version the commit is built against.
        app_id: the writer's identity.
        last_seq: the last micro-batch this writer committed (0 before its first).
        believed: where this writer holds each topic/partition to stand (its resume positions).
        batch: the batch's topic/partitions (the positions of any other partition are not claimed).
        epoch: when this process took up the identity (see :data:`EPOCH_KEY`).

    Raises:
        FencedError: a newer process took this identity, or another writer moved one of the partitions.
        Resync: an older process of this identity committed since this one read the tables.
    """
    committed = head.txn_version(app_id) or 0
    if committed != last_seq:
        theirs = _epoch_of(head, committed)
        if theirs < epoch:
            raise Resync(f"an older process of writer {app_id!r} committed micro-batch {committed}")
        raise FencedError(
            f"another process runs as speed-layer writer {app_id!r}: it committed micro-batch {committed} after this "
            f"one's {last_seq}; this process stops without committing (run one process per identity)"
        )
    recorded, fingerprints = recorded_positions(head.history)
    for topic, parts in batch.items():
        for partition in parts:
            have, want = recorded.get(topic, {}).get(partition), believed.get(topic, {}).get(partition)
            if have != want:
                raise FencedError(
                    f"{topic}[{partition}] was ingested up to offset {have} by another writer while this one "
                    f"({app_id!r}) held it at {want}; this process stops without committing"
                )
    return recorded, fingerprints


def _epoch_of(head: Head, seq: int) -> int:
    """The epoch recorded with micro-batch ``seq`` (0 when unknown: written before epochs were recorded)."""
    for limit in (RECENT_COMMITS, None):
        for commit in head.history(limit):
            if commit.get(SEQ_KEY) == seq:
                return int(commit.get(EPOCH_KEY, 0))
    return 0
