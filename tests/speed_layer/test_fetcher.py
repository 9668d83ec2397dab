"""The processing side of the fetch process: what the fetch process says before it dies reaches the runner."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaConfigurationError

from speed_layer.fetcher import Fetcher, FetchSpec


def test_the_error_a_dead_fetch_process_left_is_raised_not_a_broken_pipe() -> None:
    """Regression: asking for a batch wrote to the dead process's socket first, and BrokenPipeError hid its error."""
    spec = FetchSpec({"bootstrap_servers": ["127.0.0.1:1"], "no_such_setting": 1}, (), ("events",), 10, 1.0)
    fetcher = Fetcher(spec, lambda: None, lambda assigned: {})
    fetcher.start()
    try:
        assert fetcher._proc is not None and fetcher._proc.wait(timeout=60) == 1  # its consumer cannot be made
        with pytest.raises(KafkaConfigurationError, match="no_such_setting"):
            fetcher.next(timeout=5)
    finally:
        fetcher.close()
