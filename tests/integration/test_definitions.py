"""The definitions lifecycle: publish, verify, hot swap, fallback, staleness."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import statemachines
from functions.shared.definitions import publish_directory, read_manifest
from functions.shared.errors import (
    DefinitionsCorrupt,
    DefinitionsUnavailable,
    DefinitionsUpdateFailed,
    ObjectStoreUnavailable,
)
from functions.shared.freshclam import FreshclamSettings
from scanctl import samples

PREFIX = "clamav/defs"
BUCKET = "scanner-definitions"


def s3(harness):
    return harness.client("s3")


def scanner():
    from functions.scan_object import app as scan_app

    return scan_app.get_scanner()


def defs_dir(harness) -> Path:
    return Path(harness.options.work_dir) / "defs"


# -- the publisher ----------------------------------------------------------------------


def test_publisher_round_trip(make_harness, eicar_only, tmp_path):
    harness = make_harness(publish=None)

    first = publish_directory(s3(harness), BUCKET, PREFIX, eicar_only, engine_version="1.4.6")

    assert first.published
    manifest = read_manifest(s3(harness), BUCKET, PREFIX)
    assert manifest == first.manifest
    tarball = s3(harness).get_object(Bucket=BUCKET, Key=f"{PREFIX}/db.tar")["Body"].read()
    assert manifest["sha256"] == hashlib.sha256(tarball).hexdigest()
    assert manifest["size"] == len(tarball)
    assert manifest["key"] == f"{PREFIX}/db.tar"
    assert manifest["engineVersion"] == "1.4.6"
    assert manifest["version"].startswith("custom-")
    assert dt.datetime.fromisoformat(manifest["createdAt"].replace("Z", "+00:00"))
    [described] = manifest["files"]
    assert described["name"] == "eicar.hdb"
    assert described["signatures"] == 1
    assert (
        described["sha256"] == hashlib.sha256((eicar_only / "eicar.hdb").read_bytes()).hexdigest()
    )

    # WHEN the same content is published again THEN nothing is written
    again = publish_directory(s3(harness), BUCKET, PREFIX, eicar_only, engine_version="1.4.6")
    assert not again.published
    versions = s3(harness).list_object_versions(Bucket=BUCKET, Prefix=PREFIX)["Versions"]
    assert len(versions) == 2  # one tarball, one manifest

    # WHEN a signature is added THEN a new version is published, manifest last
    changed = tmp_path / "changed"
    samples.write_test_set(changed)
    third = publish_directory(s3(harness), BUCKET, PREFIX, changed)
    assert third.published
    assert third.manifest["version"] != manifest["version"]
    assert third.manifest["signatures"] == 2
    versions = s3(harness).list_object_versions(Bucket=BUCKET, Prefix=PREFIX)["Versions"]
    latest = {v["Key"]: v["LastModified"] for v in versions if v["IsLatest"]}
    assert latest[f"{PREFIX}/manifest.json"] >= latest[f"{PREFIX}/db.tar"]


# -- the updater --------------------------------------------------------------------------


@pytest.fixture
def bogus_mirror():
    """A mirror on 127.0.0.1 that answers every download with random bytes."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = os.urandom(4096)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_failed_freshclam_fails_loudly_and_leaves_the_cache_untouched(
    make_harness, eicar_only, bogus_mirror, tmp_path
):
    # freshclam's success path needs ClamAV's signed databases from the internet,
    # which tests cannot reach; publishing itself is tested on directories the
    # tests write (above). Here the real freshclam meets a mirror on 127.0.0.1
    # that serves garbage, so its signature verification must fail.
    from functions.update_definitions.updater import update_definitions

    harness = make_harness(publish=eicar_only)
    before = s3(harness).list_object_versions(Bucket=BUCKET, Prefix=PREFIX)["Versions"]
    url, requests = bogus_mirror

    with pytest.raises(DefinitionsUpdateFailed, match="cache is unchanged"):
        update_definitions(
            s3(harness),
            BUCKET,
            PREFIX,
            FreshclamSettings(private_mirror=url, attempts=1, connect_timeout_s=5, timeout_s=60),
            work_root=tmp_path,
        )

    assert requests, "freshclam never asked the mirror"
    after = s3(harness).list_object_versions(Bucket=BUCKET, Prefix=PREFIX)["Versions"]
    assert [v["VersionId"] for v in after] == [v["VersionId"] for v in before]
    assert list(tmp_path.iterdir()) == []  # its working directory is cleaned up


def test_updater_handler_fails_loudly(make_harness, eicar_only, bogus_mirror, monkeypatch):
    from functions.update_definitions import app as updater_app
    from scanctl.harness import LambdaContext

    harness = make_harness(publish=eicar_only)
    monkeypatch.setenv("CLAMAV_PRIVATE_MIRROR", bogus_mirror[0])
    from functions.shared.config import load_settings

    load_settings.cache_clear()
    with pytest.raises(DefinitionsUpdateFailed):
        updater_app.lambda_handler({}, LambdaContext("update_definitions"))
    assert read_manifest(s3(harness), BUCKET, PREFIX)["files"][0]["name"] == "eicar.hdb"


# -- hot swap ---------------------------------------------------------------------------------


def test_new_definitions_are_hot_swapped_into_the_warm_engine(make_harness, eicar_only, signatures):
    # GIVEN set A (EICAR only) is published and the engine is warm
    harness = make_harness(publish=eicar_only)
    clam_exe = samples.CLAM_EXE.read_bytes()
    first = harness.scan("a/clam.exe", clam_exe)
    version_a = first.output["definitions"]["version"]
    engine = scanner().engine
    pid, starts, reloads = engine.process.pid, engine.starts, engine.reloads

    # THEN ClamAV's test file is clean under A
    assert first.output["scan"]["verdict"] == "clean"

    # WHEN set B (with a body signature for it) is published
    version_b = harness.publish_definitions(signatures)["version"]
    second = harness.scan("b/clam.exe", clam_exe)

    # THEN the next execution detects it, with the same clamd reloaded in place
    assert second.output["scan"]["verdict"] == "infected"
    assert second.output["scan"]["signatures"][0].startswith(samples.CLAM_EXE_SIGNATURE)
    assert second.output["scan"]["definitionsVersion"] == version_b != version_a
    assert (engine.process.pid, engine.starts, engine.reloads) == (pid, starts, reloads + 1)
    # AND the audit items and engine tags name the version each scan used
    assert harness.audit_items("a/clam.exe")[0]["definitionsVersion"] == version_a
    assert harness.audit_items("b/clam.exe")[0]["definitionsVersion"] == version_b
    tags = harness.tags("a/clam.exe")
    assert tags["scan-engine"].endswith(f"/{version_a}")


def test_containers_archives_are_caught_after_the_swap(make_harness, signatures):
    harness = make_harness(publish=signatures)
    for name in ("clam.zip", "clam.tar.gz", "clam.7z", "clam.cab"):
        report = harness.scan(f"testfiles/{name}", (samples.CLAMAV_TESTFILES / name).read_bytes())
        assert report.output["scan"]["verdict"] == "infected", name


def test_five_switches_leave_at_most_two_versions_on_disk(make_harness, tmp_path):
    harness = make_harness(publish=None)
    seen = []
    for i in range(5):
        directory = samples.write_eicar_set(tmp_path / f"set{i}")
        (directory / "extra.ndb").write_text(f"Extra-{i}:0:*:{(f'marker-{i}-').encode().hex()}\n")
        seen.append(harness.publish_definitions(directory)["version"])
        report = harness.scan(f"switch-{i}.txt", f"marker-{i}-".encode())
        assert report.output["scan"]["verdict"] == "infected"
        on_disk = [p.name for p in defs_dir(harness).iterdir() if not p.name.startswith(".")]
        assert len(on_disk) <= 2, on_disk
        assert seen[-1] in on_disk
    assert len(set(seen)) == 5


# -- rejected definitions -------------------------------------------------------------------------


def tamper_manifest(harness, **changes):
    key = f"{PREFIX}/manifest.json"
    manifest = json.loads(s3(harness).get_object(Bucket=BUCKET, Key=key)["Body"].read())
    manifest.update(changes)
    s3(harness).put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())
    return manifest


def test_sha256_mismatch_is_rejected_and_the_execution_falls_back(harness, tmp_path):
    # GIVEN a cold scanner (nothing loaded to fall back on)
    from functions.scan_object.app import reset_scanner

    reset_scanner()
    tamper_manifest(harness, sha256="0" * 64, version="tampered-1")

    report = harness.scan("after-tamper.txt", b"hello")

    # Scan Object refused the tarball (DefinitionsCorrupt), the execution fell back to
    # freshclam, which cannot reach a mirror here, so the failure is recorded.
    assert "Use Freshclam Instead" in report.states
    assert report.status == "FAILED"
    assert report.error == "DefinitionsUnavailable"
    [retry] = [
        r
        for r in statemachines.definition(webhook=False)["States"]["Scan Object"]["Retry"]
        if "DefinitionsUnavailable" in r["ErrorEquals"]
    ]
    assert (
        report.count("LambdaFunctionFailed", "Scan Object")
        + report.count("TaskFailed", "Scan Object")
        == 2 + retry["MaxAttempts"]
    )  # DefinitionsCorrupt once (not retried), then the fallback failing, and its retries
    assert not (defs_dir(harness) / "tampered-1").exists()
    [item] = harness.audit_items("after-tamper.txt")
    assert item["error"]["error"] == "DefinitionsUnavailable"


def test_definitions_that_clamd_cannot_load_fall_back_and_scans_go_on(
    harness, signatures, tmp_path
):
    # GIVEN a warm engine on a good set
    good = harness.scan("before.txt", b"hello").output["scan"]["definitionsVersion"]
    engine = scanner().engine

    # WHEN a set whose sha256 matches but whose .ndb is malformed is published
    broken = samples.write_eicar_set(tmp_path / "broken")
    (broken / "broken.ndb").write_text("this is not a signature\n")
    bad = harness.publish_definitions(broken)["version"]
    report = harness.scan("during.com", samples.EICAR)

    # THEN Scan Object named it DefinitionsCorrupt, clamd went back to the good set,
    # the freshclam fallback (no mirror here) gave way to that set, and the scan went on
    assert report.status == "SUCCEEDED"
    assert "Use Freshclam Instead" in report.states
    assert report.output["scan"]["verdict"] == "infected"
    assert report.output["scan"]["definitionsVersion"] == good
    assert report.output["scan"]["definitionsStale"] is True
    assert engine.loaded_version == good
    assert engine.is_alive()
    assert bad in scanner().untrusted
    assert not (defs_dir(harness) / bad).exists()

    # AND the next execution does not even try the bad set again
    again = harness.scan("after.txt", b"hello")
    assert again.output["scan"]["definitionsVersion"] == good
    assert "did not load here before" in json.dumps(again.output["definitions"])

    # AND a good set published after it is used
    fixed = samples.write_test_set(tmp_path / "fixed")
    (fixed / "extra.ndb").write_text("Fixed-Marker:0:*:" + b"fixed-marker".hex() + "\n")
    newest = harness.publish_definitions(fixed)["version"]
    final = harness.scan("fixed.txt", b"a fixed-marker here")
    assert final.output["scan"]["definitionsVersion"] == newest
    assert final.output["scan"]["verdict"] == "infected"


def test_the_updater_refuses_to_publish_definitions_that_do_not_load(
    make_harness, eicar_only, tmp_path, monkeypatch
):
    from functions.shared.config import load_settings
    from functions.update_definitions import updater

    harness = make_harness(publish=eicar_only)
    before = read_manifest(s3(harness), BUCKET, PREFIX)

    def freshclam_brings_a_broken_file(directory, settings):
        # freshclam's success needs the internet; what matters here is what it leaves.
        (directory / "broken.ndb").write_text("this is not a signature\n")
        return list(directory.iterdir())

    monkeypatch.setattr(updater, "run_freshclam", freshclam_brings_a_broken_file)
    with pytest.raises(DefinitionsUpdateFailed, match="do not load"):
        updater.update_definitions(
            s3(harness), BUCKET, PREFIX, load_settings().freshclam, work_root=tmp_path
        )
    assert read_manifest(s3(harness), BUCKET, PREFIX) == before


def test_verify_loadable_accepts_a_good_set_and_names_what_is_wrong_with_a_bad_one(
    signatures, tmp_path
):
    from functions.shared.definitions import DefinitionsDoNotLoad, verify_loadable

    verify_loadable(signatures)
    bad = samples.write_eicar_set(tmp_path / "bad")
    (bad / "broken.ndb").write_text("nonsense\n")
    with pytest.raises(DefinitionsDoNotLoad, match="Malformed"):
        verify_loadable(bad)


def test_sha256_mismatch_raises_a_named_error(harness):
    from functions.fetch_definitions.logic import current_definitions

    tamper_manifest(harness, sha256="1" * 64, version="tampered-2")
    ref = current_definitions(s3(harness), BUCKET, PREFIX, 48)
    with pytest.raises(DefinitionsCorrupt, match="sha256"):
        scanner().store.materialize(ref)
    assert not (defs_dir(harness) / "tampered-2").exists()


def _publish_big_set(harness, tmp_path, name):
    # Several ranges' worth of definitions, with EICAR among them.
    directory = tmp_path / name
    directory.mkdir()
    samples.write_eicar_set(directory)
    with (directory / "filler.hdb").open("w") as out:
        for i in range(4000):
            out.write(
                f"{hashlib.sha256(str(i).encode()).hexdigest()[:32]}:{100 + i}:Filler.{name}.{i}\n"
            )
    publish_directory(s3(harness), BUCKET, PREFIX, directory)


def test_the_tarball_comes_in_parallel_ranges_read_in_order(harness, tmp_path, monkeypatch):
    from functions.fetch_definitions.logic import current_definitions
    from functions.scan_object import definitions_store

    monkeypatch.setattr(definitions_store, "RANGE_BYTES", 16 * 1024)
    _publish_big_set(harness, tmp_path, "ranged")
    ref = current_definitions(s3(harness), BUCKET, PREFIX, 48)
    assert ref.size > 4 * 16 * 1024  # more ranges than run at once
    ranges = []
    store = scanner().store

    def record(params, **kw):
        ranges.append(params.get("Range"))

    store.s3.meta.events.register("before-parameter-build.s3.GetObject", record)
    try:
        _, directory = store.materialize(ref)
    finally:
        store.s3.meta.events.unregister("before-parameter-build.s3.GetObject", record)

    assert len(ranges) == -(-ref.size // (16 * 1024))
    assert all(r and r.startswith("bytes=") for r in ranges)
    # Byte for byte what was published (the digest over the ranges in order matched).
    assert (directory / "filler.hdb").read_bytes() == (
        tmp_path / "ranged" / "filler.hdb"
    ).read_bytes()
    assert harness.scan("after-ranged.com", samples.EICAR).output["scan"]["verdict"] == "infected"


def _slow_down():
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "SlowDown", "Message": "x"}}, "GetObject")


def _connect_timeout():
    from botocore.exceptions import ConnectTimeoutError

    return ConnectTimeoutError(endpoint_url="https://s3.example")


def _read_timeout():
    from botocore.exceptions import ReadTimeoutError

    return ReadTimeoutError(endpoint_url="https://s3.example")


@pytest.mark.parametrize("fault", [_slow_down, _connect_timeout, _read_timeout])
def test_a_range_that_fails_is_a_retried_error_and_leaves_nothing_behind(
    harness, tmp_path, monkeypatch, fault
):
    # ObjectStoreUnavailable is retried by the state machine; botocore's timeouts are
    # OSErrors too, and must not read as a corrupt tarball (that falls back to freshclam).

    from functions.fetch_definitions.logic import current_definitions
    from functions.scan_object import definitions_store

    monkeypatch.setattr(definitions_store, "RANGE_BYTES", 16 * 1024)
    _publish_big_set(harness, tmp_path, f"throttled-{fault.__name__}")
    ref = current_definitions(s3(harness), BUCKET, PREFIX, 48)
    store = scanner().store
    calls = []

    def slow_down_the_third(params, **kw):
        calls.append(params.get("Range"))
        if len(calls) == 3:
            raise fault()

    store.s3.meta.events.register("before-parameter-build.s3.GetObject", slow_down_the_third)
    try:
        with pytest.raises(ObjectStoreUnavailable):
            store.materialize(ref)
    finally:
        store.s3.meta.events.unregister("before-parameter-build.s3.GetObject", slow_down_the_third)
    assert not (defs_dir(harness) / ref.version).exists()
    assert not [p for p in defs_dir(harness).iterdir() if p.name.startswith(".extract-")]


def test_manifest_naming_a_missing_tarball_is_unavailable(harness):
    from functions.fetch_definitions.logic import current_definitions

    tamper_manifest(harness, key=f"{PREFIX}/gone.tar.gz", tarballVersionId=None)
    with pytest.raises(DefinitionsUnavailable, match="missing"):
        current_definitions(s3(harness), BUCKET, PREFIX, 48)

    report = harness.scan("no-tarball.txt", b"hello")
    assert (
        report.count("LambdaFunctionFailed", "Fetch Definitions")
        + report.count("TaskFailed", "Fetch Definitions")
        == 4
    )  # the first try and its three retries
    assert "Use Freshclam Instead" in report.states


def test_tarball_with_an_escaping_member_is_rejected(harness, tmp_path):
    import io
    import tarfile

    from functions.fetch_definitions.logic import current_definitions

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name in ("ok.hdb", "../escaped.hdb"):
            data = b"x:1:Y\n"
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    body = raw.getvalue()
    put = s3(harness).put_object(Bucket=BUCKET, Key=f"{PREFIX}/evil.tar.gz", Body=body)
    tamper_manifest(
        harness,
        key=f"{PREFIX}/evil.tar.gz",
        tarballVersionId=put["VersionId"],
        sha256=hashlib.sha256(body).hexdigest(),
        version="evil-1",
    )
    work = Path(harness.options.work_dir)
    scanner()  # the scanner's own directories exist before the attempt
    before = {p.name for p in work.iterdir()}

    ref = current_definitions(s3(harness), BUCKET, PREFIX, 48)
    with pytest.raises(DefinitionsCorrupt, match=r"\.\./escaped\.hdb"):
        scanner().store.materialize(ref)

    assert {p.name for p in work.iterdir()} <= before | {"defs"}
    assert not (work / "escaped.hdb").exists()
    assert not (defs_dir(harness) / "escaped.hdb").exists()
    assert not (defs_dir(harness) / "evil-1").exists()


def test_missing_manifest_is_unavailable(make_harness):
    from functions.fetch_definitions.logic import current_definitions

    harness = make_harness(publish=None)
    with pytest.raises(DefinitionsUnavailable, match="no definitions manifest"):
        current_definitions(s3(harness), BUCKET, PREFIX, 48)


# -- staleness and cold start -------------------------------------------------------------------


def test_stale_definitions_still_scan_and_say_so(make_harness, webhook):
    harness = make_harness(webhook_url=webhook.url)
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=72)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tamper_manifest(harness, createdAt=old)

    report = harness.scan("stale.txt", b"hello")

    assert report.status == "SUCCEEDED"
    assert report.output["definitions"]["stale"] is True
    assert report.output["definitions"]["ageHours"] >= 72
    assert report.output["scan"]["definitionsStale"] is True
    assert harness.audit_items("stale.txt")[0]["definitionsStale"] is True
    assert json.loads(webhook.requests[0]["body"])["definitionsStale"] is True


def test_fresh_definitions_are_not_stale(harness):
    report = harness.scan("fresh.txt", b"hello")
    assert report.output["definitions"]["stale"] is False
    assert report.output["scan"]["definitionsStale"] is False


def test_cold_start_loads_the_current_definitions_before_the_first_request(harness, tmp_path):
    from functions.scan_object.scanner import Scanner
    from functions.shared import aws
    from functions.shared.config import Settings

    settings = Settings.from_env({**os.environ, "CLAMAV_WORK_DIR": str(tmp_path / "cold")})
    cold = Scanner(aws.client("s3"), settings)
    try:
        assert cold.engine.loaded_version is None
        version = cold.warm_up()
        manifest = read_manifest(s3(harness), BUCKET, PREFIX)
        assert version == manifest["version"]
        assert cold.engine.loaded_version == version
        assert cold.engine.is_alive()
    finally:
        cold.engine.stop()


def test_freshclam_definitions_that_do_not_load_end_the_fallback(harness, tmp_path, monkeypatch):
    # GIVEN a cold scanner, a cache tarball that is refused, and a freshclam whose
    # set clamd cannot load either
    from functions.scan_object import definitions_store
    from functions.scan_object.app import reset_scanner

    broken = samples.write_eicar_set(tmp_path / "freshclam-broken")
    (broken / "broken.ndb").write_text("this is not a signature\n")
    runs = []

    def freshclam(store):
        runs.append(1)
        return "freshclam-broken", broken

    monkeypatch.setattr(definitions_store.DefinitionsStore, "_run_freshclam", freshclam)
    reset_scanner()
    tamper_manifest(harness, sha256="0" * 64, version="tampered-2")

    report = harness.scan("fallback-broken.txt", b"hello")

    # THEN the execution falls back to freshclam once, not round after round
    # (each DefinitionsCorrupt would go back to it until the history is full),
    # and fails at Scan Object, recorded, for an operator to redrive
    assert report.status == "FAILED"
    assert report.error == "DefinitionsUnavailable"
    assert report.states.count("Use Freshclam Instead") == 1
    [item] = harness.audit_items("fallback-broken.txt")
    assert item["error"]["error"] == "DefinitionsUnavailable"
    # AND freshclam ran once: the retry, and the next scan's fallback, did not
    # download the whole database from the mirrors again
    again = harness.scan("fallback-again.txt", b"hello")
    assert again.error == "DefinitionsUnavailable"
    assert len(runs) == 1
