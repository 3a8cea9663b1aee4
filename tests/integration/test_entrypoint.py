"""The images' entrypoint, driven the way Lambda drives it.

Each function runs as its image runs it: ``python -m awslambdaric <handler>``
(docker/Dockerfile's ENTRYPOINT and CMD, the same awslambdaric pin), against
a Runtime API stand-in on 127.0.0.1 (tests/integration/runtime_api.py). The
scanner runs as an unprivileged user with a read-only root and a writable
/tmp, as in Lambda, and scans from an S3 emulator over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from scanctl import samples
from stacks.constants import METRICS_NAMESPACE
from tests.integration.runtime_api import RuntimeApi

REPO = Path(__file__).resolve().parents[2]
STEPS = [
    "start_scan",
    "fetch_definitions",
    "apply_verdict",
    "record_audit",
    "notify_webhook",
    "record_failure",
    "rescan_batch",
]


def lambda_env(api: RuntimeApi, name: str, **extra: str) -> dict[str, str]:
    """What Lambda puts in a function's environment (and our stack adds)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR")}
    return {
        **keep,
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/28/[$LATEST]0123456789abcdef",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "LAMBDA_TASK_ROOT": str(REPO),
        "POWERTOOLS_SERVICE_NAME": name.replace("_", "-"),
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    }


def entrypoint(handler: str) -> list[str]:
    """The Dockerfile's ENTRYPOINT and CMD."""
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    assert entry == ["python", "-m", "awslambdaric"]
    return [sys.executable, "-m", "awslambdaric", handler]


def test_the_image_pins_the_awslambdaric_the_tests_run():
    import importlib.metadata

    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    [pinned] = re.findall(r"awslambdaric==([\d.]+)", dockerfile)
    assert importlib.metadata.version("awslambdaric") == pinned


# What SQS delivers when S3 sends its test event on configuring the notification.
S3_TEST_EVENT = {
    "Records": [
        {
            "messageId": "0d3f1c2a-1111-2222-3333-444455556666",
            "receiptHandle": "handle",
            "body": json.dumps(
                {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "uploads"}
            ),
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:scan-queue",
            "awsRegion": "us-east-1",
        }
    ]
}


def run_entrypoint(api: RuntimeApi, handler: str, name: str) -> tuple[Any, str]:
    """The image's entrypoint for ``handler`` until it posted once: (what, its output)."""
    proc = subprocess.Popen(
        entrypoint(handler),
        cwd=REPO,
        env=lambda_env(api, name),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        [posted] = api.wait_for(1, timeout_s=60)
    finally:
        proc.kill()
        output = proc.communicate()[0].decode(errors="replace")
    return posted, output


# What each step says about an event that is not its own. Fetch Definitions reads
# no event: what it lacks here is its bucket setting.
BAD_EVENT_ERRORS = {"fetch_definitions": "ConfigurationError"}


@pytest.mark.parametrize("name", STEPS)
def test_each_step_resolves_and_reports_a_bad_event_by_its_error_name(name):
    with RuntimeApi() as api:
        # The starter is fed by SQS (an S3 test event: ignored); the others get a
        # payload that is not theirs.
        api.invoke(S3_TEST_EVENT if name == "start_scan" else {"not": "what this step takes"})
        posted, output = run_entrypoint(api, f"functions.{name}.app.lambda_handler", name)

    # The handler was found and ran: an answer, or our named error, never Runtime.*
    assert posted.kind in ("response", "error"), output[-3000:]
    if name == "start_scan":
        assert (posted.kind, posted.body) == ("response", {"batchItemFailures": []}), output
    else:
        assert not str(posted.error_type).startswith("Runtime."), (posted, output[-3000:])
        expected = BAD_EVENT_ERRORS.get(name, "InvalidInput")
        assert posted.body["errorType"] == expected, (posted.body, output[-3000:])
    assert api.served[0]["Lambda-Runtime-Trace-Id"].startswith("Root=1-")


def test_a_handler_that_does_not_exist_is_an_init_error():
    with RuntimeApi() as api:
        posted, _ = run_entrypoint(api, "functions.nope.app.lambda_handler", "nope")
    assert posted.kind == "init-error"
    assert posted.error_type == "Runtime.ImportModuleError"


# -- the scanner: unprivileged, read-only root, writable /tmp ---------------------------------


def _not_traversable_ancestor(path: Path) -> Path | None:
    """The first directory on the way to ``path`` that others may not enter (/root)."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


def _jail_script() -> str:
    """Shell run by `unshare --mount` as root: build Lambda's file system, then drop
    to nobody. The checkout is reached through /mnt/task (it may live under /tmp,
    which a fresh tmpfs replaces)."""
    return r"""
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /mnt
mkdir /mnt/task
mount --rbind "$REPO" /mnt/task
if [ -n "$HIDDEN" ]; then
  # The interpreter lives under a directory nobody may enter (/root): show only it.
  mkdir /mnt/keep
  mount --rbind "$KEEP" /mnt/keep
  mount -t tmpfs -o mode=755 tmpfs "$HIDDEN"
  mkdir -p "$KEEP"
  mount --rbind /mnt/keep "$KEEP"
fi
mount -o remount,bind,ro /
mount -t tmpfs -o mode=1777 tmpfs /tmp
cd /mnt/task
exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
"""


@pytest.fixture
def s3_over_http(signatures):
    """An S3 emulator on 127.0.0.1 holding the definitions and an EICAR upload."""
    import boto3
    from moto.server import ThreadedMotoServer

    from functions.fetch_definitions.logic import current_definitions
    from functions.shared.definitions import publish_directory

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for bucket in ("uploads", "scanner-definitions"):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    publish_directory(s3, "scanner-definitions", "clamav/defs", signatures)
    put = s3.put_object(Bucket="uploads", Key="eicar.com", Body=samples.EICAR)
    yield {
        "endpoint": endpoint,
        "object": {
            "bucket": "uploads",
            "key": "eicar.com",
            "versionId": put["VersionId"],
            "size": len(samples.EICAR),
            "eTag": put["ETag"].strip('"'),
        },
        "definitions": current_definitions(s3, "scanner-definitions", "clamav/defs", 48).to_dict(),
    }
    server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root (or CAP_SYS_ADMIN)")
@pytest.mark.skipif(not shutil.which("unshare"), reason="util-linux unshare is not installed")
def test_the_scanner_runs_unprivileged_on_a_read_only_root_and_scans(s3_over_http):
    interpreter = Path(sys.executable).resolve()
    hidden = _not_traversable_ancestor(interpreter)
    keep = ""
    if hidden is not None:  # e.g. /root/.pyenv/versions/3.11.7/bin/python
        keep = str(hidden / interpreter.relative_to(hidden).parts[0])
    venv_python = f"/mnt/task/{Path(sys.executable).relative_to(REPO)}"
    with RuntimeApi() as api:
        api.invoke({"object": s3_over_http["object"], "definitions": s3_over_http["definitions"]})
        api.invoke({"object": "not an object"})
        env = lambda_env(
            api,
            "scan_object",
            AWS_ENDPOINT_URL=s3_over_http["endpoint"],
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="3008",
            CLAMAV_WORK_DIR="/tmp/clamav",
            DEFINITIONS_BUCKET_NAME="scanner-definitions",
            SOURCE_BUCKET_NAME="uploads",
            HOME="/tmp",
            LAMBDA_TASK_ROOT="/mnt/task",
            REPO=str(REPO),
            HIDDEN=str(hidden or ""),
            KEEP=keep,
        )
        proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--",
                "sh",
                "-c",
                _jail_script(),
                "jail",
                venv_python,
                "-m",
                "awslambdaric",
                "functions.scan_object.app.lambda_handler",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # clamd too goes with the group at the end
        )
        try:
            scanned, refused = api.wait_for(2, timeout_s=180)
            # unshare, sh and setpriv exec: the runtime is this very process.
            status = Path(f"/proc/{proc.pid}/status").read_text()
            mounts = Path(f"/proc/{proc.pid}/mountinfo").read_text().splitlines()
        finally:
            # The runtime's clamd (started from its warm-up thread) outlives a plain
            # kill, as it would a frozen Lambda sandbox: end the whole group.
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0].decode(errors="replace")

    assert scanned.kind == "response", (scanned, output[-4000:])
    assert scanned.body["verdict"] == "infected"
    assert scanned.body["signatures"][0].startswith(samples.EICAR_SIGNATURE)
    assert refused.kind == "error"
    assert refused.body["errorType"] == "InvalidInput"
    # It really ran as nobody, on a root it could not write, with /tmp its own.
    uid = next(line for line in status.splitlines() if line.startswith("Uid:")).split()
    assert uid[1:] == ["65534"] * 4
    fields = {line.split()[4]: line.split()[5] for line in mounts}
    assert fields["/"].split(",")[0] == "ro"
    assert fields["/tmp"].split(",")[0] == "rw"


def test_a_scanner_initialised_before_any_request_warms_up_quietly_and_traces_it(
    s3_over_http, tmp_path
):
    """Lambda may initialise a container before any request comes (proactive init).
    The warm-up loads the engine then; with tracing on, as the stack deploys it, the
    S3 calls that belong to no trace make no warnings, and the request that comes
    later is traced."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon,
        RuntimeApi(sampled=True) as api,
    ):
        daemon.bind(("127.0.0.1", 0))  # the X-Ray daemon's UDP port
        daemon.settimeout(30)
        env = lambda_env(
            api,
            "scan_object",
            AWS_ENDPOINT_URL=s3_over_http["endpoint"],
            AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{daemon.getsockname()[1]}",
            CLAMAV_WORK_DIR=str(tmp_path / "clamav"),
            DEFINITIONS_BUCKET_NAME="scanner-definitions",
            SOURCE_BUCKET_NAME="uploads",
        )
        del env["POWERTOOLS_TRACE_DISABLED"]
        proc = subprocess.Popen(
            entrypoint("functions.scan_object.app.lambda_handler"),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # clamd, started by the warm-up thread, goes too
        )
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)
        reader.start()
        seen: list[str] = []
        line = ""
        try:
            while "engine warmed up" not in line and "warm-up failed" not in line:
                line = lines.get(timeout=120)  # init: nothing asked for yet
                seen.append(line)
            assert "engine warmed up" in line, "".join(seen)[-3000:]
            api.invoke(
                {"object": s3_over_http["object"], "definitions": s3_over_http["definitions"]}
            )
            [scanned] = api.wait_for(1, timeout_s=60)
            traced = set()
            while "## lambda_handler" not in traced:
                document = daemon.recv(65536).decode().split("\n", 1)[1]
                traced.add(json.loads(document)["name"])
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reader.join(timeout=10)
            seen += list(lines.queue)
    output = "".join(seen)
    assert scanned.kind == "response", (scanned, output[-3000:])
    assert scanned.body["verdict"] == "infected"
    assert "still initializing" not in output
