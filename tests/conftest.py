"""Shared fixtures: signature sets the tests write, the harness, a webhook receiver."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# Before anything builds a boto3 client: no credentials lookup may leave the machine.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from scanctl import samples

EVENTS = Path(__file__).parent / "events"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def require_clamav() -> None:
    if not shutil.which("clamd") or not samples.CLAM_EXE.exists():
        pytest.fail("ClamAV is not installed: run `make test`, which installs it")


@pytest.fixture(scope="session")
def signatures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Set B: EICAR hash + ClamAV test file body signature."""
    require_clamav()
    return samples.write_test_set(tmp_path_factory.mktemp("sigs-b"))


@pytest.fixture(scope="session")
def eicar_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Set A: EICAR hash only."""
    return samples.write_eicar_set(tmp_path_factory.mktemp("sigs-a"))


@pytest.fixture(scope="session")
def clamav_work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One scanner work directory per session, so clamd stays warm across tests."""
    path = tmp_path_factory.mktemp("clamav")
    yield path
    import sys

    # Not imported here if no test imported it: importing starts its warm-up.
    scan_app = sys.modules.get("functions.scan_object.app")
    if scan_app is not None:
        scan_app.reset_scanner()


# -- IAM: every call of every harness, against the synthesized policies (tests/iamcheck) --------


@pytest.fixture(scope="session", autouse=True)
def iam_templates(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The template variants (tests/synth.py), each synthesized once per run.

    A run with many end-to-end tests (the whole suite) starts them in the
    background at once, so the first harness rarely waits; a run of a few
    tests synthesizes one only when a harness closes and needs it.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from tests import synth

    root = synth.shared_root(tmp_path_factory.getbasetemp())
    end_to_end = sum(
        any(part in ("integration", "infrastructure") for part in item.path.parts)
        for item in request.session.items
    )
    if end_to_end < EAGER_SYNTH_AFTER:

        class Lazy(dict):
            def __missing__(self, name: str) -> Future:
                future: Future = Future()
                future.set_result(synth.variant(name, root))
                self[name] = future
                return future

        yield Lazy()
        return
    with ThreadPoolExecutor(len(synth.VARIANTS)) as pool:
        yield {name: pool.submit(synth.variant, name, root) for name in synth.VARIANTS}


# End-to-end tests in a run from which the templates are synthesized up front.
EAGER_SYNTH_AFTER = 30


@pytest.fixture(autouse=True)
def iam_checked(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each harness a test opens records its AWS calls; when the test ends, every
    call is checked against the policies `cdk synth` gives its principal."""
    from scanctl.harness import LocalScanner

    closed: list[Any] = []
    LocalScanner.watchers.append(closed.append)
    try:
        yield
    finally:
        LocalScanner.watchers.remove(closed.append)
    if not closed:
        return
    from tests import iamcheck

    templates = request.getfixturevalue("iam_templates")
    problems: list[str] = []
    for harness in closed:
        variant = iamcheck.variant_for(harness.options)
        synthesized = templates[variant].result()["template"]
        problems += iamcheck.check(harness, synthesized, variant)
    if problems:
        pytest.fail(
            "AWS calls the synthesized IAM policies do not allow:\n" + "\n".join(problems),
            pytrace=False,
        )


@pytest.fixture
def make_harness(clamav_work: Path, signatures: Path) -> Iterator[Any]:
    """Build a LocalScanner with the test signature set published."""
    from scanctl.harness import HarnessOptions, LocalScanner

    opened: list[LocalScanner] = []

    def build(publish: Path | None = signatures, **options: Any) -> LocalScanner:
        harness = LocalScanner(HarnessOptions(work_dir=clamav_work, **options))
        harness.__enter__()
        opened.append(harness)
        if publish is not None:
            harness.publish_definitions(publish)
        return harness

    yield build
    for harness in reversed(opened):
        harness.__exit__(None, None, None)


@pytest.fixture
def harness(make_harness: Any) -> Any:
    return make_harness()


WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3RzLW9ubHktMzI="  # 32 bytes


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it receives.

    With ``secret`` set it verifies every request as a receiver would, with
    the ``standardwebhooks`` library, and records the verdict as ``verified``.
    """

    url: str
    responses: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    secret: str | None = None
    delay_s: float = 0.0

    def answer(self, *statuses: int) -> None:
        """Statuses for the next requests, in order; afterwards 200."""
        self.responses.extend(statuses)

    def verify(self, headers: dict[str, str], body: bytes) -> str:
        from standardwebhooks import Webhook, WebhookVerificationError

        if not self.secret:
            return "no secret"
        try:
            Webhook(self.secret).verify(body, headers)
        except (WebhookVerificationError, ValueError) as err:
            return f"refused: {err}"
        return "ok"


@contextlib.contextmanager
def serving_webhook() -> Iterator[Receiver]:
    """A Receiver listening on 127.0.0.1 until the block ends."""
    receiver = Receiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = dict(self.headers)
            with lock:
                status = receiver.responses.pop(0) if receiver.responses else 200
                receiver.requests.append(
                    {
                        "headers": headers,
                        "body": body,
                        "status": status,
                        "verified": receiver.verify(headers, body),
                    }
                )
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    with serving_webhook() as receiver:
        yield receiver


@dataclass
class AwsFaults:
    """Make the handlers' own boto3 clients fail an operation, as AWS would answer it."""

    registered: list[tuple[Any, str, Any]] = field(default_factory=list)

    def fail(
        self, service: str, operation: str, code: str, times: int = 1_000, **where: str
    ) -> list[dict]:
        """The next ``times`` calls of ``operation`` (whose parameters match ``where``)
        answer ``code``; returns the calls that failed."""
        from botocore.exceptions import ClientError

        from functions.shared import aws

        seen: list[dict] = []

        def hook(params: dict, **_: Any) -> None:
            if any(params.get(k) != v for k, v in where.items()):
                return
            if len(seen) < times:
                seen.append(params)
                raise ClientError({"Error": {"Code": code, "Message": code}}, operation)

        client = aws.client(service)
        event = f"provide-client-params.{service}.{operation}"
        client.meta.events.register(event, hook)
        self.registered.append((client, event, hook))
        return seen

    def raise_(self, service: str, operation: str, error: Exception, times: int = 1) -> list:
        """The next ``times`` calls raise ``error`` (a dropped connection, say)."""
        from functions.shared import aws

        seen: list[dict] = []

        def hook(params: dict, **_: Any) -> None:
            if len(seen) < times:
                seen.append(params)
                raise error

        client = aws.client(service)
        event = f"provide-client-params.{service}.{operation}"
        client.meta.events.register(event, hook)
        self.registered.append((client, event, hook))
        return seen

    def clear(self) -> None:
        for client, event, hook in self.registered:
            client.meta.events.unregister(event, hook)
        self.registered.clear()


@pytest.fixture
def aws_faults() -> Iterator[AwsFaults]:
    faults = AwsFaults()
    yield faults
    faults.clear()
