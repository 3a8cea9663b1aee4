"""scanctl as a user runs it: the installed command in its own process.

Options in any order, odd inputs (FIFOs, devices, symlink loops), Ctrl-C and
SIGTERM, stdout that holds nothing but results, and `local serve` on a busy
port and against a real HTTP client.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scanctl import samples

SCANCTL = [sys.executable, "-m", "scanctl"]


def run(
    args: list[str], tmp: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess:
    """scanctl in a process of its own, its temporary files under ``tmp``."""
    return subprocess.run(
        [*SCANCTL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp), **env},
    )


def json_rows(stdout: str) -> list[dict]:
    # Every stdout line is a result: json.loads fails the test on anything else.
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """TMPDIR for the command: whatever it leaves behind is visible here."""
    path = tmp_path / "tmp"
    path.mkdir()
    return path


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    root = tmp_path / "odd"
    root.mkdir()
    (root / "clean.txt").write_text("hello\n")
    (root / "eicar.com").write_bytes(samples.EICAR)
    os.mkfifo(root / "pipe")
    (root / "loop").symlink_to(root / "loop")
    (root / "dangling").symlink_to(root / "missing-target")
    (root / "linked-dir").symlink_to(tmp_path)
    (root / "link-to-clean.txt").symlink_to(root / "clean.txt")
    return root


def test_options_go_before_or_after_the_paths(tmp_path, scratch, signatures):
    (tmp_path / "a.txt").write_text("a")
    before = run(
        ["local", "--json", "--definitions", str(signatures), str(tmp_path / "a.txt")], scratch
    )
    after = run(
        ["local", str(tmp_path / "a.txt"), "--definitions", str(signatures), "--json"], scratch
    )

    for done in (before, after):
        assert done.returncode == 0, done.stderr
        [row] = json_rows(done.stdout)
        assert (row["key"], row["verdict"]) == ("a.txt", "clean")


def test_local_help_lists_the_scan_options_and_serve(scratch):
    done = run(["local", "--help"], scratch)

    assert done.returncode == 0
    for text in ("PATH...", "--json", "--definitions", "--no-quarantine", "--webhook", "serve"):
        assert text in done.stdout


def test_every_entry_gets_a_row_and_nothing_odd_is_read(odd_tree, scratch, signatures):
    done = run(["local", str(odd_tree), "--json", "--definitions", str(signatures)], scratch, 120)

    rows = {row["key"]: row for row in json_rows(done.stdout)}
    assert rows["pipe"]["error"] == "not a regular file: fifo"
    assert rows["loop"]["error"] == "symlink loop"
    assert rows["dangling"]["error"] == "dangling symlink"
    assert (
        rows["linked-dir"]["error"] == "not a regular file: symlink to a directory (not followed)"
    )
    assert rows["clean.txt"]["verdict"] == "clean"
    assert rows["link-to-clean.txt"]["verdict"] == "clean"  # a link to a file is that file
    assert rows["eicar.com"]["verdict"] == "infected"
    assert done.returncode == 1  # infected wins over errors, as with clamscan


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: os.mkfifo(p), "not a regular file: fifo"),
        (lambda p: p.symlink_to(p), "symlink loop"),
        (lambda p: p.symlink_to("/dev/zero"), "not a regular file: character device"),
        (lambda p: None, "does not exist"),
    ],
)
def test_an_odd_argument_is_an_error_row_and_exit_two(tmp_path, scratch, make, says):
    target = tmp_path / "odd"
    make(target)

    done = run(["local", str(target), "--json"], scratch, timeout=30)

    assert done.returncode == 2, done.stderr
    [row] = json_rows(done.stdout)
    assert (row["verdict"], row["error"]) == ("error", says)


def test_dev_zero_is_refused_not_read(scratch):
    done = run(["local", "/dev/zero"], scratch, timeout=30)
    assert done.returncode == 2
    assert "not a regular file: character device" in done.stdout
    assert "Traceback" not in done.stderr


def test_stdout_holds_only_results_with_metrics_on(tmp_path, scratch, signatures):
    for i in range(20):
        (tmp_path / f"f{i}.txt").write_text(f"file {i}\n")
    (tmp_path / "eicar.com").write_bytes(samples.EICAR)

    done = run(
        ["local", str(tmp_path), "--json", "--definitions", str(signatures)],
        scratch,
        POWERTOOLS_METRICS_NAMESPACE="S3VirusScanner",
        POWERTOOLS_METRICS_DISABLED="false",
    )

    rows = json_rows(done.stdout)  # any metrics line would not parse as a result
    assert len(rows) == 21
    assert all("verdict" in row for row in rows)
    assert '"_aws"' in done.stderr  # the metrics were emitted, to stderr


def _start(args: list[str], scratch: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*SCANCTL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )


def _wait_for(proc: subprocess.Popen, text: str, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if text in line:
            return seen
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"never saw {text!r}: {''.join(seen)[-2000:]}")


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_prints_what_finished_and_leaves_no_temp_files(
    tmp_path, scratch, signatures, sig, status
):
    tree = tmp_path / "many"
    tree.mkdir()
    for i in range(300):
        (tree / f"f{i:03}.txt").write_text(f"file {i}\n")
    proc = _start(["local", str(tree), "--json", "--definitions", str(signatures)], scratch)
    _wait_for(proc, "/300 (", timeout=120)  # the first progress line: some have finished

    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == status, stderr[-2000:]
    rows = json_rows(stdout)
    assert 64 <= len(rows) < 300
    assert all(row["verdict"] == "clean" for row in rows)
    assert f"interrupted: {len(rows)} of 300 finished" in stderr
    assert list(scratch.iterdir()) == []


# -- local serve ---------------------------------------------------------------------------------


def test_serve_on_a_busy_port_is_one_sentence_and_exit_two(scratch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run(["local", "serve", "--port", str(port), "--for", "30"], scratch, timeout=30)

    # One sentence and nothing else: refused before the emulator started.
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use; choose another with --port"
    ]


def test_serve_prints_its_names_and_one_line_per_upload(scratch):
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = _start(["local", "serve", "--port", str(port), "--for", "20", "--json"], scratch)
    try:
        facts = json.loads(proc.stdout.readline())
        assert facts["endpoint"] == f"http://127.0.0.1:{port}"
        assert facts["bucket"] == "uploads"
        assert facts["quarantineBucket"] == "quarantine"
        assert facts["auditTable"] == "scan-audit"
        assert facts["stateMachineArn"].startswith("arn:aws:states:us-east-1:")
        # A real HTTP client, as the AWS CLI would be.
        s3 = boto3.client(
            "s3",
            endpoint_url=facts["endpoint"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.put_object(Bucket="uploads", Key="served/eicar.com", Body=samples.EICAR)
        line = proc.stdout.readline()
        assert line.startswith("s3://uploads/served/eicar.com: infected quarantined")
        s3.put_object(Bucket="uploads", Key="served/ok.txt", Body=b"fine")
        assert proc.stdout.readline() == "s3://uploads/served/ok.txt: clean tagged\n"
        # A rescan from another process, against the served endpoint, is a line too.
        rescan = run(
            [
                "rescan",
                "s3://uploads/served/",
                "--local",
                "--endpoint-url",
                facts["endpoint"],
                "--region",
                "us-east-1",
                "--state-machine-arn",
                facts["stateMachineArn"],
            ],
            scratch,
            timeout=60,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )
        assert rescan.returncode == 0, rescan.stderr
        assert proc.stdout.readline() == "s3://uploads/served/ok.txt: clean tagged (rescan)\n"
        # The access gate, merged into the served bucket's policy over HTTP as well.
        role = "arn:aws:iam::123456789012:role/scanner-local"
        gate = [
            "policy",
            "s3://uploads",
            "--apply",
            "--reader-role",
            role,
            "--tagging-role",
            role,
            "--endpoint-url",
            facts["endpoint"],
            "--region",
            "us-east-1",
        ]
        keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        applied = run(gate, scratch, timeout=60, **keys)
        again = run(gate, scratch, timeout=60, **keys)
        assert applied.returncode == 0, applied.stderr
        assert "policy updated" in applied.stderr
        assert "nothing changed" in again.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert list(scratch.iterdir()) == []


def test_a_file_name_that_is_not_utf8_is_a_row_and_the_rest_is_scanned(tmp_path, scratch):
    tree = tmp_path / "names"
    tree.mkdir()
    (tree / "ok.txt").write_text("fine\n")
    with open(os.path.join(os.fsencode(tree), b"caf\xe9.txt"), "wb") as latin:
        latin.write(b"a latin-1 file name")

    for output in (["--json"], []):
        done = run(["local", str(tree), *output], scratch)

        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        if output:
            rows = {row["key"]: row for row in json_rows(done.stdout)}
            assert rows["ok.txt"]["verdict"] == "clean"
            assert rows["caf\\xe9.txt"]["error"] == "file name is not UTF-8 (S3 keys are)"
        else:
            assert "caf\\xe9.txt\terror" in done.stdout


def test_version_names_the_release(tmp_path):
    import tomllib

    version = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
        "version"
    ]
    result = run(["--version"], tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"scanctl, version {version}"
