"""The client of Airflow's REST API under the faults a loaded machine produces: dropped and refused connections."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lambdaflow.errors import ServiceError
from lambdaflow_app.airflow_local import request_json


class FlakyServer(ThreadingHTTPServer):
    """Hangs up on the first ``drops`` requests without an answer, then answers each with ``status``."""

    def __init__(self, drops: int, status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.drops, self.status, self.seen = drops, status, 0


class _Handler(BaseHTTPRequestHandler):
    server: FlakyServer

    def do_GET(self) -> None:
        self.server.seen += 1
        if self.server.seen <= self.server.drops:
            self.connection.shutdown(socket.SHUT_RDWR)  # what a restarted API worker does to a request in flight
            self.close_connection = True
            return
        body = json.dumps({"state": "running", "seen": self.server.seen}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[list[FlakyServer]]:
    started: list[FlakyServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def _start(started: list[FlakyServer], drops: int, status: int = 200) -> str:
    server = FlakyServer(drops, status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started.append(server)
    return f"http://127.0.0.1:{server.server_address[1]}/api/v2/dags/d/dagRuns/r"


def test_a_dropped_connection_is_asked_again_and_answered(serve: list[FlakyServer]) -> None:
    """Regression (CI: RemoteDisconnected while polling a DAG run ended the loop): two hang-ups, then the answer."""
    url = _start(serve, drops=2)
    assert request_json(urllib.request.Request(url), retry_for=30) == {"state": "running", "seen": 3}


def test_an_error_answer_is_raised_at_once_and_not_asked_again(serve: list[FlakyServer]) -> None:
    url = _start(serve, drops=0, status=404)
    with pytest.raises(urllib.error.HTTPError) as caught:
        request_json(urllib.request.Request(url), retry_for=30)
    assert caught.value.code == 404 and serve[0].seen == 1


def test_an_api_that_stays_away_ends_in_one_readable_error(serve: list[FlakyServer]) -> None:
    url = _start(serve, drops=10**6)
    with pytest.raises(ServiceError, match=r"failed for 2s \(RemoteDisconnected.*airflow-api log"):
        request_json(urllib.request.Request(url), retry_for=2)
    assert serve[0].seen > 1


def test_a_refused_connection_is_transient_too() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceError, match="ConnectionRefusedError|Connection refused"):
        request_json(urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/version"), retry_for=1)
