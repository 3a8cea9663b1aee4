"""A stand-in for the Lambda Runtime API on 127.0.0.1, for the images' entrypoint.

The images run ``python -m awslambdaric <handler>`` (docker/Dockerfile), which
polls ``/2018-06-01/runtime/invocation/next`` and posts each result to
``/response`` or ``/error``, or an init failure to ``/init/error``. This
serves queued events with every header the real API sends with each one
(awslambdaric's native client crashes without ``Lambda-Runtime-Trace-Id``)
and records what the runtime posts back.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"


@dataclass
class Posted:
    kind: str  # "response", "error" or "init-error"
    request_id: str | None
    body: Any
    error_type: str | None


@dataclass
class RuntimeApi:
    function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:under-test"
    events: queue.Queue = field(default_factory=queue.Queue)
    posted: list[Posted] = field(default_factory=list)
    served: list[dict[str, str]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    sampled: bool = False  # what each invocation's trace header says X-Ray samples

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    self.send_error(404)
                    return
                event = api.events.get()  # long poll, as Lambda's API does
                request_id = str(uuid.uuid4())
                headers = {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int((time.time() + 300) * 1000)),
                    "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                    "Lambda-Runtime-Trace-Id": (
                        f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
                        f"Parent={uuid.uuid4().hex[:16]};Sampled={int(api.sampled)}"
                    ),
                }
                body = json.dumps(event).encode()
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                api.served.append(headers)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode(errors="replace")
                parts = self.path.removeprefix(PREFIX).strip("/").split("/")
                if parts == ["init", "error"]:
                    kind, request_id = "init-error", None
                elif (
                    len(parts) == 3
                    and parts[0] == "invocation"
                    and parts[2]
                    in (
                        "response",
                        "error",
                    )
                ):
                    kind, request_id = parts[2], parts[1]
                else:
                    self.send_error(404)
                    return
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with api.arrived:
                    api.posted.append(
                        Posted(
                            kind,
                            request_id,
                            body,
                            self.headers.get("Lambda-Runtime-Function-Error-Type"),
                        )
                    )
                    api.arrived.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self) -> RuntimeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def invoke(self, event: Any) -> None:
        self.events.put(event)

    def wait_for(self, count: int, timeout_s: float) -> list[Posted]:
        """The first ``count`` things the runtime posted."""
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while len(self.posted) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the runtime posted {len(self.posted)} of {count}")
                self.arrived.wait(left)
            return list(self.posted[:count])
