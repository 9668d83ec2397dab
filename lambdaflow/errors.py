"""Every error Lambdaflow raises on purpose, under one base.

A :class:`LambdaflowError` is an expected failure with a message meant for the
person running the command: the command line prints it as one line and exits
with :attr:`LambdaflowError.exit_code`. Anything else that escapes is a bug and
keeps its traceback.

Each subclass also derives from the builtin exception it replaced (``ValueError``,
``RuntimeError``, ``OSError``), so callers that caught those keep working.
"""

from __future__ import annotations

__all__ = [
    "ConcurrentCommitError",
    "ConfigError",
    "FencedError",
    "CycleError",
    "InputFileError",
    "LambdaflowError",
    "ModelVerificationError",
    "OffsetGapError",
    "PartitionFilterError",
    "ProduceError",
    "QueryError",
    "ServiceError",
    "StorageError",
    "TableError",
    "TableMissingError",
    "TrainingError",
    "UnhealthyError",
]


class LambdaflowError(Exception):
    """Base of every expected Lambdaflow failure; the message says what went wrong and how to fix it."""

    #: Exit code of the command line when this error ends a command.
    exit_code: int = 1


class ConfigError(LambdaflowError, ValueError):
    """A configuration file is missing, unparsable or invalid.

    The message names the file and, for each problem, the key path, what was
    expected and what was found.
    """

    exit_code = 2


class TableError(LambdaflowError, RuntimeError):
    """A Delta table operation was refused or failed."""


class PartitionFilterError(TableError):
    """An overwrite would write files outside the partitions it replaces."""


class ConcurrentCommitError(TableError):
    """Another writer committed first; retry on a fresh snapshot."""


class TableMissingError(TableError):
    """The table does not exist (yet)."""


class StorageError(LambdaflowError, OSError):
    """A small-file operation on the storage root (local disk or WebHDFS) failed."""


class ServiceError(LambdaflowError, RuntimeError):
    """An embedded service did not start, stop or answer; the message names it and its log."""


class InputFileError(LambdaflowError, ValueError):
    """A file given to replay or load cannot be read; the message names the file and what is wrong."""


class ProduceError(LambdaflowError, RuntimeError):
    """Records could not all be delivered to Kafka; the message says how many and why."""


class OffsetGapError(LambdaflowError, RuntimeError):
    """The Kafka log does not continue where the speed layer stopped; the message names topic, partition and offsets."""

    exit_code = 3


class FencedError(LambdaflowError, RuntimeError):
    """Another speed-layer process took over this writer's identity or one of its partitions: this one stops, committing nothing more."""

    exit_code = 4


class ModelVerificationError(LambdaflowError, RuntimeError):
    """A registered model's artefact is missing, altered or does not match its feature list."""


class CycleError(LambdaflowError, RuntimeError):
    """The batch cycle found the tables in a state it must not publish."""


class QueryError(LambdaflowError, ValueError):
    """The SQL could not be parsed or run; the message points at the problem."""


class TrainingError(LambdaflowError, ValueError):
    """A training set or model cannot be built as asked (no labels declared, a one-class holdout, …)."""


class UnhealthyError(LambdaflowError, RuntimeError):
    """A health threshold is crossed; the message names each one."""
