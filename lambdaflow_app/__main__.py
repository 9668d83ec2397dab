"""``python -m lambdaflow_app …`` is the ``lambdaflow`` command."""

from __future__ import annotations

from lambdaflow_app.cli import main

if __name__ == "__main__":
    main()
