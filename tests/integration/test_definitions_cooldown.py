"""Deploy day and ClamAV's CDN: the cool-down is kept and honoured, the fallback never
stampedes, a scan that comes before the first fill waits for it.

The real freshclam talks to a mirror on 127.0.0.1 (its ``PrivateMirror``) that
answers a CVD header probe with a valid-looking header, so freshclam goes on to
download, and answers the download as the test says: 429 (with or without
Retry-After), 403, garbage, or nothing at all (a stall). freshclam names its
client in every request (the UUID in its User-Agent), so the mirror counts
clients, not just requests.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from functions.record_audit.schema import CDN_LEASE_KEY, from_item
from functions.shared.cdn_lease import CdnLease, Holder
from functions.shared.definitions import read_manifest
from functions.shared.errors import DefinitionsUnavailable, DefinitionsUpdateFailed
from functions.shared.freshclam import FreshclamSettings
from scanctl import samples

BUCKET = "scanner-definitions"
PREFIX = "clamav/defs"
STATE_KEY = "clamav/updater/freshclam.dat"
TABLE = "scan-audit"
# freshclam.dat: "FreshClamData", then {uint32 version; char uuid[37]; time_t retry_after}
# (x86_64: retry_after at +48 of the struct), as libfreshclam writes it.
RETRY_AFTER_OFFSET = 13 + 48


@dataclass
class Mirror:
    url: str = ""
    answer: str = "429"  # the download's answer: 429, 403, garbage or stall
    retry_after: int | None = None
    remote_version: int = 27999  # what the header probe says the mirror holds
    refuse_probe: bool = False  # the refusal comes to the header probe already
    requests: list[dict[str, Any]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def clients(self) -> set[str]:
        return {r["client"] for r in self.requests}

    def header(self) -> bytes:
        md5 = "0" * 32
        text = f"ClamAV-VDB:02 Dec 2026 08-00 +0000:{self.remote_version}:10:90:{md5}:x:x:1"
        return text.encode().ljust(512, b" ")


@pytest.fixture
def mirror():
    mirror = Mirror()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = re.search(r"UUID: ([0-9a-f-]+)", self.headers.get("User-Agent", ""))
            with lock:
                mirror.requests.append(
                    {
                        "path": self.path,
                        "range": self.headers.get("Range"),
                        "client": found.group(1) if found else "",
                    }
                )
            if mirror.answer == "stall":
                mirror.released.wait(30)
                return
            if self.headers.get("Range") and not mirror.refuse_probe:  # an update is available
                body = mirror.header()
                self.send_response(206)
            elif mirror.answer == "garbage":
                body = os.urandom(4096)
                self.send_response(200)
            else:
                body = b""
                self.send_response(int(mirror.answer))
                if mirror.retry_after is not None:
                    self.send_header("Retry-After", str(mirror.retry_after))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield mirror
    mirror.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def atomic_conditional_writes(monkeypatch):
    """DynamoDB checks a condition and writes in one step; moto's in-process
    backend does not under threads. The lease relies on AWS's behaviour, so the
    race tests get it."""
    from moto.dynamodb.models import DynamoDBBackend

    original = DynamoDBBackend.update_item
    lock = threading.Lock()

    def update_item(self, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "update_item", update_item)


def lease_item(harness) -> dict[str, Any]:
    key = {name: {"S": value} for name, value in CDN_LEASE_KEY.items()}
    return from_item(harness.client("dynamodb").get_item(TableName=TABLE, Key=key).get("Item", {}))


def kept_retry_after(harness) -> float:
    """retry_after in the freshclam.dat the updater keeps in the cache bucket."""
    data = harness.client("s3").get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read()
    assert data.startswith(b"FreshClamData")
    return struct.unpack_from("<q", data, RETRY_AFTER_OFFSET)[0]


def quick(mirror: Mirror) -> FreshclamSettings:
    """freshclam against the mirror, with short timeouts: a stalled mirror costs
    seconds (two requests time out, then freshclam gives up)."""
    return FreshclamSettings(
        private_mirror=mirror.url,
        attempts=1,
        connect_timeout_s=2,
        receive_timeout_s=2,
        timeout_s=30,
    )


def acting(function: str) -> Any:
    """Calls made as ``function``'s role: the IAM check judges them by its policy."""
    from scanctl.harness.principals import FUNCTION, Principal, acting_as

    return acting_as(Principal(FUNCTION, function))


def update(harness, settings: FreshclamSettings):
    """One run of the updater, with freshclam settings of the test's choosing."""
    from functions.update_definitions.updater import update_definitions

    with acting("update_definitions"):
        return update_definitions(
            harness.client("s3"),
            BUCKET,
            PREFIX,
            settings,
            state_key=STATE_KEY,
            lease=CdnLease(harness.client("dynamodb"), TABLE, Holder.UPDATER),
        )


def run_handler(harness, mirror, monkeypatch) -> tuple[dict[str, Any], dict[str, Any]]:
    """The updater invoked as Lambda invokes it: its result, and the metrics it
    emitted (in CloudWatch's embedded metric format, as Powertools flushes them)."""
    from functions.shared.config import load_settings
    from functions.update_definitions import app as updater_app

    monkeypatch.setenv("CLAMAV_PRIVATE_MIRROR", mirror.url)
    load_settings.cache_clear()
    provider = updater_app.metrics.provider
    # As Lambda starts it, with the stack's environment (the module may have been
    # imported by an earlier test before any harness set POWERTOOLS_*).
    monkeypatch.setattr(provider, "namespace", os.environ["POWERTOOLS_METRICS_NAMESPACE"])
    flushed: list[dict[str, Any]] = []

    def recording_flush(*args: Any, **kwargs: Any) -> None:
        flushed.append(provider.serialize_metric_set())
        provider.clear_metrics()  # as a flush does (Powertools keeps them when disabled)

    monkeypatch.setattr(provider, "flush_metrics", recording_flush)
    payload, failed = harness.invoker.invoke("update_definitions", {})
    assert not failed, payload
    [metrics] = flushed
    return json.loads(payload), metrics


def seconds_until(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - time.time()


# -- the updater and the cool-down ---------------------------------------------------------


def test_a_429_puts_the_updater_on_cool_down_and_the_next_runs_call_nothing(
    make_harness, mirror, monkeypatch
):
    # GIVEN the first deploy: an empty cache, and a CDN that rate-limits us
    harness = make_harness(publish=None)
    mirror.retry_after = 600

    # WHEN the updater runs
    result, metrics = run_handler(harness, mirror, monkeypatch)

    # THEN it says it is on cool-down for Retry-After, and publishes nothing
    assert result["status"] == "cool-down"
    assert result["published"] is False
    assert result["version"] is None
    assert 590 < seconds_until(result["coolDownUntil"]) <= 600
    assert read_manifest(harness.client("s3"), BUCKET, PREFIX) is None
    # AND its metric says so (the DefinitionsCoolDown alarm watches it)
    assert metrics["DefinitionsCoolDown"] == [1.0]
    assert metrics["DefinitionsPublished"] == [0.0]
    assert metrics["coolDownUntil"] == result["coolDownUntil"]
    # AND freshclam's state is kept in the cache bucket with that cool-down
    assert 590 < kept_retry_after(harness) - time.time() <= 600
    # AND the scanners see it on the lease
    assert 590 < float(lease_item(harness)["coolDownUntil"]) - time.time() <= 600
    assert len(mirror.clients()) == 1

    # WHEN the updater runs again THEN it calls nothing, and says so again
    mirror.requests.clear()
    again, metrics = run_handler(harness, mirror, monkeypatch)
    assert again["coolDownUntil"] == result["coolDownUntil"]
    assert metrics["DefinitionsCoolDown"] == [1.0]
    assert mirror.requests == []

    # AND freshclam.dat alone keeps it from calling: with the lease item gone
    # (deleted by hand, say), the restored file still holds the cool-down
    harness.client("dynamodb").delete_item(
        TableName=TABLE, Key={k: {"S": v} for k, v in CDN_LEASE_KEY.items()}
    )
    third, _ = run_handler(harness, mirror, monkeypatch)
    assert third["status"] == "cool-down"
    assert mirror.requests == []
    assert "coolDownUntil" in lease_item(harness)  # and the lease shows it again


@pytest.mark.parametrize(
    ("answer", "retry_after", "probe", "cool_down_s"),
    [
        ("429", None, False, 4 * 3600),
        ("403", None, False, 24 * 3600),
        ("429", 600, True, 600),
    ],
    ids=["429-without-retry-after", "403", "429-to-the-header-probe"],
)
def test_clamav_defaults_without_retry_after_and_for_a_403(
    make_harness, mirror, answer, retry_after, probe, cool_down_s
):
    harness = make_harness(publish=None)
    mirror.answer, mirror.retry_after, mirror.refuse_probe = answer, retry_after, probe

    # WHEN the updater meets the refusal (freshclam exits 0 on a 429 to a download,
    # 17 on a 403, 11 on a refused header probe, which it reports as malformed)
    result = update(harness, quick(mirror))

    # THEN either way it is a cool-down, not a failure, for ClamAV's default time
    assert result.status == "cool-down"
    assert cool_down_s - 10 < seconds_until(result.cool_down_until) <= cool_down_s
    assert cool_down_s - 10 < kept_retry_after(harness) - time.time() <= cool_down_s
    # AND the next run does not call the CDN
    mirror.requests.clear()
    assert update(harness, quick(mirror)).status == ("cool-down")
    assert mirror.requests == []


def test_freshclams_client_id_survives_a_failed_run(make_harness, mirror):
    # GIVEN a mirror that serves garbage: freshclam fails, without a cool-down
    harness = make_harness(publish=None)
    mirror.answer = "garbage"
    settings = quick(mirror)

    # WHEN the updater runs twice
    for _ in range(2):
        with pytest.raises(DefinitionsUpdateFailed, match="cache is unchanged"):
            update(harness, settings)

    # THEN both runs were one client of the CDN: freshclam.dat was saved after
    # the failed run and restored before the next
    assert len(mirror.requests) >= 2
    assert len(mirror.clients()) == 1
    assert kept_retry_after(harness) == 0
    assert "coolDownUntil" not in lease_item(harness)


def test_a_stalled_mirror_fails_the_run_in_bounded_time_and_frees_the_lease(make_harness, mirror):
    harness = make_harness(publish=None)
    mirror.answer = "stall"

    started = time.monotonic()
    with pytest.raises(DefinitionsUpdateFailed, match="cache is unchanged"):
        update(harness, quick(mirror))
    took = time.monotonic() - started

    # THEN freshclam's own timeouts ended it (two requests of 2 s; its own limit
    # is 30 s), not a cool-down
    assert took < 30, took
    assert mirror.requests
    item = lease_item(harness)
    assert "coolDownUntil" not in item
    assert "holder" not in item  # given back: the next run is not blocked
    CdnLease(harness.client("dynamodb"), TABLE, Holder.UPDATER).take(60)


def write_cld_set(directory: Path, databases: tuple[str, ...]) -> Path:
    """Databases whose CVD headers say version 99999 (freshclam reads only the
    header to compare versions), and EICAR."""
    samples.write_eicar_set(directory)
    md5 = "0" * 32
    header = f"ClamAV-VDB:01 Dec 2026 08-00 +0000:99999:10:90:{md5}:x:x:1".encode()
    for name in databases:
        (directory / f"{name}.cld").write_bytes(header.ljust(512, b" ") + b"\0" * 64)
    return directory


@pytest.mark.parametrize(
    ("databases", "status"),
    [(("main", "daily", "bytecode"), "unchanged"), (("main", "daily"), "cool-down")],
    ids=["up-to-date", "429-after-exit-0"],
)
def test_a_run_that_changed_nothing_is_not_taken_for_a_fresh_set(
    make_harness, mirror, tmp_path, databases, status
):
    # GIVEN a cache whose set was published three days ago, and a mirror whose
    # databases are no newer; with bytecode missing, freshclam downloads it and
    # meets a 429, which it reports as success (exit 0)
    harness = make_harness(publish=write_cld_set(tmp_path / "set", databases))
    s3 = harness.client("s3")
    manifest = read_manifest(s3, BUCKET, PREFIX)
    manifest["createdAt"] = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).isoformat()
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/manifest.json", Body=json.dumps(manifest))
    before = s3.list_object_versions(Bucket=BUCKET, Prefix=PREFIX)["Versions"]
    mirror.retry_after = 600

    # WHEN the updater runs
    result = update(harness, quick(mirror))

    # THEN nothing is published and nothing claims the set is fresh
    assert mirror.requests  # freshclam did ask
    assert result.status == status
    assert result.published is False
    assert result.version == manifest["version"]
    assert 71.9 < result.age_hours < 72.1
    after = s3.list_object_versions(Bucket=BUCKET, Prefix=PREFIX)["Versions"]
    assert [v["VersionId"] for v in after] == [v["VersionId"] for v in before]
    assert (result.cool_down_until is not None) is (status == "cool-down")


# -- the scanners' freshclam fallback ---------------------------------------------------------


class StubEngine:
    """clamd's side, recorded: who fetches from the CDN is what these tests are about."""

    last_load_s = 0.0

    def __init__(self) -> None:
        self.loaded_version: str | None = None

    def is_alive(self) -> bool:
        return self.loaded_version is not None

    def ensure(self, version: str, directory: Path) -> None:
        self.loaded_version = version

    def stop(self) -> None:
        pass


def cold_scanners(tmp_path: Path, mirror: Mirror, count: int, wait_s: float) -> list[Any]:
    """``count`` containers, each its own scanner, work directory and (stub) engine."""
    from functions.scan_object.scanner import Scanner
    from functions.shared import aws
    from functions.shared.config import Settings

    aws.client("dynamodb")  # built once, before the threads: boto3 builds clients unsafely
    scanners = []
    for i in range(count):
        settings = Settings.from_env(
            {
                **os.environ,
                "CLAMAV_WORK_DIR": str(tmp_path / f"container-{i}"),
                "CLAMAV_PRIVATE_MIRROR": mirror.url,
                "DEFINITIONS_WAIT_SECONDS": str(wait_s),
            }
        )
        scanners.append(Scanner(aws.client("s3"), settings, engine=StubEngine()))
    return scanners


def race(scanners: list[Any], ended: list[float] | None = None) -> list[tuple[str, float]]:
    """Every scanner asks for definitions after Use Freshclam Instead, all at once:
    (the version it got or the error, seconds it took); ``ended`` gets when each
    one ended (time.monotonic())."""
    from functions.shared.contracts import DefinitionsRef

    barrier = threading.Barrier(len(scanners))
    outcomes: list[tuple[str, float]] = [("", 0.0)] * len(scanners)

    def run(i: int) -> None:
        barrier.wait()
        started = time.monotonic()
        try:
            with acting("scan_object"):
                got = scanners[i].load(DefinitionsRef(source="freshclam"))
        except DefinitionsUnavailable as err:
            got = f"DefinitionsUnavailable: {err}"
        outcomes[i] = (got, time.monotonic() - started)
        if ended is not None:
            ended.append(time.monotonic())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(scanners))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return outcomes


@pytest.mark.parametrize("answer", ["429", "garbage"])
def test_twenty_cold_containers_make_at_most_one_cdn_fetch(
    make_harness, mirror, tmp_path, atomic_conditional_writes, answer
):
    # GIVEN the first deploy's empty cache, and 20 cold scanners sent to the
    # freshclam fallback at once (a 429 with Retry-After, or garbage: a failed fetch)
    harness = make_harness(publish=None)
    mirror.answer, mirror.retry_after = answer, 600
    scanners = cold_scanners(tmp_path, mirror, 20, wait_s=60)

    outcomes = race(scanners)

    # THEN one freshclam client reached the CDN, not twenty
    assert len(mirror.clients()) == 1, mirror.clients()
    # AND none had definitions: each failed DefinitionsUnavailable (retried by the
    # state machine) without waiting, as nothing they could wait for was coming
    assert all(got.startswith("DefinitionsUnavailable") for got, _ in outcomes)
    refused = [took for got, took in outcomes if "may not fetch now" in got]
    assert len(refused) == 19
    assert max(refused) < 30, max(refused)  # far from the 60 s they would have waited
    if answer == "429":
        # AND the fallback's cool-down holds the updater too: it calls nothing
        assert 590 < float(lease_item(harness)["coolDownUntil"]) - time.time() <= 600
        mirror.requests.clear()
        result = update(harness, quick(mirror))
        assert result.status == "cool-down"
        assert mirror.requests == []


def test_twenty_cold_containers_wait_for_the_cache_the_updater_is_filling(
    make_harness, mirror, tmp_path, eicar_only, atomic_conditional_writes, monkeypatch
):
    from functions.scan_object import scanner as scanner_module

    monkeypatch.setattr(scanner_module, "CACHE_POLL_S", 0.2)
    # GIVEN the deploy's first fill under way: the updater holds the CDN lease
    harness = make_harness(publish=None)
    updater = CdnLease(harness.client("dynamodb"), TABLE, Holder.UPDATER)
    updater.take(900)
    # A bound far past the fill: a loaded machine is slow.
    scanners = cold_scanners(tmp_path, mirror, 20, wait_s=60)

    # WHEN it publishes after 1.5 s, while 20 cold scanners have fallen back
    publishing: list[float] = []

    def fill() -> None:
        time.sleep(1.5)
        publishing.append(time.monotonic())  # nothing can load the set before this
        harness.publish_definitions(eicar_only)
        updater.give_back()

    filler = threading.Thread(target=fill)
    filler.start()
    outcomes = race(scanners, ended=(ended := []))
    filler.join()

    # THEN every one of them waited for the fill and loaded the cache's set (none
    # gave up at its bound: that is DefinitionsUnavailable), and none called the CDN
    version = read_manifest(harness.client("s3"), BUCKET, PREFIX)["version"]
    assert [got for got, _ in outcomes] == [version] * 20
    assert mirror.requests == []
    assert min(ended) >= publishing[0]


def test_a_cold_scanner_waits_for_the_cache_no_longer_than_its_bound(
    make_harness, mirror, tmp_path, monkeypatch
):
    from functions.scan_object import scanner as scanner_module

    monkeypatch.setattr(scanner_module, "CACHE_POLL_S", 0.2)
    harness = make_harness(publish=None)
    CdnLease(harness.client("dynamodb"), TABLE, Holder.UPDATER).take(900)  # never published
    [scanner] = cold_scanners(tmp_path, mirror, 1, wait_s=1.5)

    [(got, took)] = race([scanner])

    assert got.startswith("DefinitionsUnavailable")
    assert "the updater is fetching" in got
    assert 1.2 <= took < 30, took  # about its bound (the last poll short of it), no longer
    assert mirror.requests == []


# -- end to end, with clamd --------------------------------------------------------------------


def _entered(sfn: Any, harness: Any, state: str) -> bool:
    """Whether any execution of the harness's machine has entered ``state``."""
    for execution in sfn.list_executions(stateMachineArn=harness.state_machine_arn)["executions"]:
        events = sfn.get_execution_history(executionArn=execution["executionArn"])["events"]
        if any((e.get("stateEnteredEventDetails") or {}).get("name") == state for e in events):
            return True
    return False


def test_a_scan_before_the_first_fill_waits_for_it_and_finds_eicar(
    make_harness, mirror, eicar_only, monkeypatch
):
    from functions.scan_object import scanner as scanner_module

    monkeypatch.setattr(scanner_module, "CACHE_POLL_S", 0.2)
    # GIVEN a new deployment: nothing in the cache, the updater's first run under way
    harness = make_harness(
        publish=None,
        extra_env={"CLAMAV_PRIVATE_MIRROR": mirror.url, "DEFINITIONS_WAIT_SECONDS": "20"},
    )
    updater = CdnLease(harness.client("dynamodb"), TABLE, Holder.UPDATER)
    updater.take(900)

    def fill() -> None:
        # Once the scan has fallen back (not on a timer: a slow machine would reach
        # Fetch Definitions after the fill and never fall back)
        sfn = harness.client("stepfunctions")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _entered(sfn, harness, "Use Freshclam Instead"):
            time.sleep(0.05)
        time.sleep(1.0)  # ...and is waiting on the updater's lease
        harness.publish_definitions(eicar_only)
        updater.give_back()

    filler = threading.Thread(target=fill)
    filler.start()
    # WHEN EICAR is uploaded before the set is published
    report = harness.scan("first-upload.com", samples.EICAR)
    filler.join()

    # THEN the scan fell back, waited for the cache rather than calling the CDN,
    # and found EICAR with the set the updater published
    assert "Use Freshclam Instead" in report.states
    assert report.status == "SUCCEEDED"
    assert report.output["scan"]["verdict"] == "infected"
    version = read_manifest(harness.client("s3"), BUCKET, PREFIX)["version"]
    assert report.output["scan"]["definitionsVersion"] == version
    assert report.output["scan"]["definitionsStale"] is False
    assert report.output["action"]["action"] == "quarantined"
    assert mirror.requests == []


def test_scans_failed_during_a_cool_down_are_redriven_onto_the_cache(
    make_harness, mirror, eicar_only
):
    # GIVEN ClamAV's CDN has us on cool-down and the cache is empty
    harness = make_harness(
        publish=None,
        extra_env={"CLAMAV_PRIVATE_MIRROR": mirror.url, "DEFINITIONS_WAIT_SECONDS": "1"},
    )
    CdnLease(harness.client("dynamodb"), TABLE, Holder.FALLBACK).cool_down(
        time.time() + 3600, "a 429"
    )

    # WHEN an object is uploaded THEN its scan fails DefinitionsUnavailable at Scan
    # Object, after the state machine's retries, without a call to the CDN
    failed = harness.scan("during-cool-down.com", samples.EICAR)
    assert failed.status == "FAILED"
    assert failed.error == "DefinitionsUnavailable"
    assert "cool-down" in failed.cause
    assert mirror.requests == []

    # WHEN the cache is filled (an operator publishing, or the updater after the
    # cool-down) and the execution is redriven THEN it resumes at Scan Object on
    # the cache's set
    version = harness.publish_definitions(eicar_only)["version"]
    redriven = harness.redrive(failed.name)
    assert redriven.status == "SUCCEEDED"
    assert redriven.output["scan"]["verdict"] == "infected"
    assert redriven.output["scan"]["definitionsVersion"] == version


# -- review findings: each test failed before its fix --------------------------------------


class FailingStatePut:
    """The harness's S3 client, except that saving freshclam.dat fails (a 5xx)."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def put_object(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        if kwargs.get("Key") == STATE_KEY:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "x"}}, "PutObject")
        return self._s3.put_object(**kwargs)


def test_a_429_is_kept_on_the_lease_even_when_its_file_cannot_be_saved(make_harness, mirror):
    from botocore.exceptions import ClientError

    from functions.update_definitions.updater import update_definitions

    # GIVEN a mirror that answers 429 and a bucket that refuses freshclam.dat
    harness = make_harness(publish=None)
    mirror.answer, mirror.retry_after = "429", 600
    with acting("update_definitions"), pytest.raises(ClientError):
        update_definitions(
            FailingStatePut(harness.client("s3")),
            BUCKET,
            PREFIX,
            quick(mirror),
            state_key=STATE_KEY,
            lease=CdnLease(harness.client("dynamodb"), TABLE, Holder.UPDATER),
        )
    asked = len(mirror.requests)
    assert asked > 0

    # THEN the cool-down is on the lease all the same, and Lambda's retry of the
    # failed run asks the CDN nothing
    assert 590 < float(lease_item(harness)["coolDownUntil"]) - time.time() <= 600
    assert update(harness, quick(mirror)).status == "cool-down"
    assert len(mirror.requests) == asked


def test_a_cool_down_no_cdn_would_set_is_cut_to_a_week_and_reported(make_harness, mirror, tmp_path):
    # GIVEN a kept freshclam.dat whose retry_after is in the year 11476 (damaged,
    # or written by hand): freshclam itself obeys it, silently, for ever
    harness = make_harness(publish=write_cld_set(tmp_path / "set", ("main", "daily", "bytecode")))
    assert update(harness, quick(mirror)).status == "unchanged"  # keeps a freshclam.dat
    s3 = harness.client("s3")
    data = bytearray(s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read())
    struct.pack_into("<q", data, RETRY_AFTER_OFFSET, 300_000_000_000)
    s3.put_object(Bucket=BUCKET, Key=STATE_KEY, Body=bytes(data))

    # THEN the updater reports a cool-down (its metric and alarm fire), cut to a
    # week, in the kept file too: updates resume by then
    result = update(harness, quick(mirror))
    assert result.status == "cool-down"
    week = 7 * 24 * 3600
    assert week - 60 < seconds_until(result.cool_down_until) <= week
    assert week - 60 < kept_retry_after(harness) - time.time() <= week


def test_a_set_freshclam_left_without_main_is_never_published(make_harness, tmp_path, monkeypatch):
    # GIVEN a freshclam (stand-in on PATH) that does what 1.4 does when the CDN
    # answers 429 to main.cvd on deploy day: it keeps the other databases, sets the
    # cool-down and exits 0
    harness = make_harness(publish=None)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "freshclam"
    script.write_text(
        f"""#!{os.sys.executable}
import re, struct, sys, time
from pathlib import Path
config = Path(sys.argv[1].split("=", 1)[1]).read_text()
directory = Path(re.search(r"DatabaseDirectory (.+)", config).group(1))
header = b"ClamAV-VDB:01 Dec 2026 08-00 +0000:99999:10:90:{"0" * 32}:x:x:1"
for name in ("daily", "bytecode"):
    (directory / (name + ".cld")).write_bytes(header.ljust(512, b" ") + bytes(64))
body = struct.pack("<I37s7xq", 1, b"0" * 36 + bytes(1), int(time.time()) + 4 * 3600)
(directory / "freshclam.dat").write_bytes(b"FreshClamData" + body + bytes(21))
"""
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    # THEN the run is a cool-down, and the cache holds nothing
    result = update(harness, quick(Mirror(url="http://127.0.0.1:9")))
    assert result.status == "cool-down"
    assert not result.published
    assert read_manifest(harness.client("s3"), BUCKET, PREFIX) is None


def test_a_second_updater_run_while_the_first_fetches_is_not_a_failure(make_harness, mirror):
    from functions.update_definitions.updater import update_definitions

    # GIVEN the deploy's run holding the lease when the schedule's run starts
    harness = make_harness(publish=None)
    CdnLease(harness.client("dynamodb"), TABLE, Holder.UPDATER).take(900)
    started = time.monotonic()
    with acting("update_definitions"):
        result = update_definitions(
            harness.client("s3"),
            BUCKET,
            PREFIX,
            quick(mirror),
            state_key=STATE_KEY,
            lease=CdnLease(harness.client("dynamodb"), TABLE, Holder.UPDATER),
        )
    # THEN it ends without waiting out the lease (2 minutes), without a request
    # and without an error (no false alarm)
    assert time.monotonic() - started < 60
    assert result.status == "unchanged"
    assert mirror.requests == []


def test_scanctl_local_reads_past_the_lease_item(make_harness):
    from scanctl.local import _mark_audited

    harness = make_harness()
    with acting("scan_object"):
        CdnLease(None, TABLE, Holder.FALLBACK).cool_down(time.time() + 60, "a 429")
    _mark_audited(harness, [])  # raised KeyError('executionName') before
