"""Lambdaflow: what every layer agrees on — config, view definitions, tables, registry, services — and the CLI."""

__version__ = "0.1.0"
