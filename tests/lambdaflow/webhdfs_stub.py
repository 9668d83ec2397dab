"""A WebHDFS-protocol test server over a local directory.

A STAND-IN FOR A REAL NAMENODE: it speaks the subset of the WebHDFS REST API
the `hdfs` client uses (CREATE with the datanode redirect, OPEN, GETFILESTATUS,
LISTSTATUS, MKDIRS, DELETE), so the client code path is exercised for real
over HTTP. No HDFS namenode can be installed on the development machine.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

PREFIX = "/webhdfs/v1"


def serve(root: Path) -> tuple[ThreadingHTTPServer, str]:
    """Start the stub on a free loopback port; returns the server and its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet tests
            pass

        def _target(self) -> tuple[Path, dict[str, list[str]]]:
            url = urlparse(self.path)
            assert url.path.startswith(PREFIX)
            return root / url.path[len(PREFIX) :].lstrip("/"), parse_qs(url.query)

        def _json(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _missing(self, path: Path) -> None:
            self._json(
                404,
                {
                    "RemoteException": {
                        "exception": "FileNotFoundException",
                        "javaClassName": "java.io.FileNotFoundException",
                        "message": f"File does not exist: {path}",
                    }
                },
            )

        @staticmethod
        def _status(path: Path) -> dict:
            return {
                "pathSuffix": path.name,
                "type": "DIRECTORY" if path.is_dir() else "FILE",
                "length": 0 if path.is_dir() else path.stat().st_size,
                "modificationTime": int(path.stat().st_mtime * 1000),
                "permission": "755",
                "owner": "lambdaflow",
                "group": "supergroup",
                "replication": 1,
            }

        def do_PUT(self) -> None:
            path, query = self._target()
            op = query["op"][0]
            if op == "CREATE" and "datanode" not in query:
                self.send_response(307)  # the namenode sends the client to a datanode
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}{self.path}&datanode=true")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif op == "CREATE":
                if path.exists() and query.get("overwrite", ["false"])[0].lower() != "true":
                    self._json(
                        403, {"RemoteException": {"exception": "FileAlreadyExistsException", "javaClassName": "x", "message": str(path)}}
                    )
                    return
                path.parent.mkdir(parents=True, exist_ok=True)
                length = int(self.headers.get("Content-Length") or 0)
                path.write_bytes(self.rfile.read(length))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif op == "MKDIRS":
                path.mkdir(parents=True, exist_ok=True)
                self._json(200, {"boolean": True})
            else:
                self._json(400, {"RemoteException": {"exception": "UnsupportedOperationException", "javaClassName": "x", "message": op}})

        def do_GET(self) -> None:
            path, query = self._target()
            op = query["op"][0]
            if not path.exists():
                self._missing(path)
            elif op == "GETFILESTATUS":
                self._json(200, {"FileStatus": self._status(path)})
            elif op == "LISTSTATUS":
                self._json(200, {"FileStatuses": {"FileStatus": [self._status(p) for p in sorted(path.iterdir())]}})
            elif op == "OPEN":
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._json(400, {"RemoteException": {"exception": "UnsupportedOperationException", "javaClassName": "x", "message": op}})

        def do_DELETE(self) -> None:
            path, query = self._target()
            if not path.exists():
                self._json(200, {"boolean": False})
                return
            if path.is_dir():
                if query.get("recursive", ["false"])[0].lower() != "true" and any(path.iterdir()):
                    self._json(
                        403,
                        {"RemoteException": {"exception": "PathIsNotEmptyDirectoryException", "javaClassName": "x", "message": str(path)}},
                    )
                    return
                shutil.rmtree(path)
            else:
                path.unlink()
            self._json(200, {"boolean": True})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
