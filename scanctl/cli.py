"""scanctl: run the scanner locally, and operate a deployed one.

Exit status, like clamscan: 0 nothing found, 1 something infected or
unscannable, 2 an error (bad input, a failed scan, an AWS error).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scanctl import samples

err = Console(stderr=True)
out = Console()

# States every successful run visits: tables show only the deciding ones.
_COMMON_STATES = {
    "Fetch Definitions",
    "Scan Object",
    "Which Verdict?",
    "Webhook Configured?",
    "Done",
}
DEFAULT_STACK = os.environ.get("SCANNER_STACK", "S3VirusScanner-dev")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _say(message: str) -> None:
    """A plain line on stderr (never wrapped, so scripts can grep it)."""
    click.echo(message, err=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


@click.group()
@click.version_option(package_name="s3-virus-scanner", prog_name="scanctl")
def main() -> None:
    """Run the S3 virus scanner locally, and operate a deployed one."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    # Powertools warns when a handler published no metric (S3's test event).
    warnings.filterwarnings("ignore", message="No application metrics to publish")


# -- local -------------------------------------------------------------------------------------


class _LocalGroup(click.Group):
    """`scanctl local [OPTIONS] PATH...` scans (options before or after the paths);
    `scanctl local serve [OPTIONS]` serves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {
            "ignore_unknown_options": True,  # the scan's options, wherever they are
            "allow_extra_args": True,
            "help_option_names": [],  # --help belongs to the scan, which lists serve too
        }
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args:
            args = ["--help"]  # `scanctl local` alone: the help, not an error
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] in self.commands and args[0] != "scan":
            return super().resolve_command(ctx, args)
        return super().resolve_command(ctx, ["scan", *args])


@main.group(cls=_LocalGroup)
def local() -> None:
    """Scan files through the whole pipeline on this machine (emulated AWS, real ClamAV)."""


def _scan_options(fn: Any) -> Any:
    # Applied last first: --help lists them in this order.
    fn = click.option("--webhook", metavar="URL", help="POST every result to this URL.")(fn)
    fn = click.option(
        "--no-quarantine", is_flag=True, help="Delete infected objects instead of quarantining."
    )(fn)
    fn = click.option(
        "--definitions",
        type=click.Path(path_type=Path),
        help="A directory of ClamAV database files (default: /var/lib/clamav if it holds "
        "a database, else a built-in test signature set).",
    )(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")(fn)
    return fn


class _ScanCommand(click.Command):
    """The scan, whose help also names `scanctl local serve`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {"help_option_names": ["--help", "-h"]}
        super().__init__(*args, **kwargs)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # It is `scanctl local PATH...`: the hidden `scan` is not typed.
        path = ctx.command_path.removesuffix(" scan")
        formatter.write_usage(path, " ".join(self.collect_usage_pieces(ctx)))

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Also"):
            formatter.write_dl(
                [
                    (
                        "scanctl local serve [OPTIONS]",
                        "Keep the emulated AWS on 127.0.0.1 and scan whatever is uploaded "
                        "(see scanctl local serve --help). To scan a directory named "
                        "serve, write ./serve.",
                    )
                ]
            )


@local.command("scan", cls=_ScanCommand, hidden=True)
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="PATH..."
)
@_scan_options
@click.pass_context
def local_scan(
    ctx: click.Context,
    paths: tuple[Path, ...],
    as_json: bool,
    definitions: Path | None,
    no_quarantine: bool,
    webhook: str | None,
) -> None:
    """Scan files and directories through the whole pipeline on this machine.

    Emulated S3, SQS, Step Functions and DynamoDB, the real state machine, real
    ClamAV. Options go before or after the paths. Only regular files are scanned:
    anything else (a FIFO, a device, a socket, a symlink loop, a dangling link)
    gets an error row. Exit status: 0 all clean, 1 anything infected or
    unscannable, 2 errors, 130 interrupted (results so far are printed).
    """
    from scanctl.local import collect

    ctx.info_name = "local"  # usage reads `scanctl local`, not `scanctl local scan`
    targets = collect(list(paths))
    if not targets:
        _say("nothing to scan")
        sys.exit(0)
    _run_and_report(targets, definitions, not no_quarantine, webhook, as_json)


def _stop_on_signals() -> Callable[[], None]:
    """Ctrl-C and SIGTERM stop a run alike: results so far, temp files removed.

    The stop is also remembered (``request_stop``): the emulator swallows an
    exception raised inside its S3 notification code, and a swallowed Ctrl-C
    must still stop the run at its next file. Returns what puts the handlers
    that were there before back.
    """
    import signal
    import threading

    from scanctl.local import request_stop

    def stop(signum: int, frame: Any) -> None:
        raise request_stop(130 if signum == signal.SIGINT else 128 + signum)

    if threading.current_thread() is not threading.main_thread():  # (click's test runner)
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, stop)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def _run_and_report(
    targets: list[Any],
    definitions: Path | None,
    quarantine: bool,
    webhook: str | None,
    as_json: bool,
    expected: dict[str, str] | None = None,
) -> None:
    from functions.shared.config import validate_webhook_url
    from functions.shared.errors import ConfigurationError
    from scanctl.local import Interrupted, choose_definitions, exit_status, run_local

    if webhook:
        try:
            validate_webhook_url("--webhook", webhook)
        except ConfigurationError as bad:
            _fail(str(bad))
    restore_signals = _stop_on_signals()
    results_out = sys.stdout
    interrupted: Interrupted | None = None
    started = time.monotonic()
    # Results alone go to stdout: anything else the pipeline prints (Powertools'
    # metrics, a library's warning) goes to stderr while it runs.
    with contextlib.ExitStack() as signals, contextlib.redirect_stdout(sys.stderr):
        signals.callback(restore_signals)  # also when it ends in _fail or an interrupt
        try:
            with tempfile.TemporaryDirectory(prefix="scanctl-") as tmp:
                try:
                    choice = choose_definitions(definitions, Path(tmp))
                except FileNotFoundError as bad:
                    _fail(str(bad))
                _say(f"definitions: {choice.description}")
                total = len(targets)
                done = [0]
                step = max(64, total // 20)  # 64: what one batch of executions scans

                def advance(progress: Progress, task: Any, n: int) -> None:
                    progress.advance(task, n)
                    # Without a terminal the bar is not drawn: log a line now and then.
                    before, done[0] = done[0], done[0] + n
                    if not err.is_terminal and (
                        done[0] // step > before // step or done[0] == total
                    ):
                        rate = done[0] / max(time.monotonic() - started, 1e-9)
                        _say(f"scanned {done[0]}/{total} ({rate:.1f}/s)")

                with _progress() as progress:
                    task = progress.add_task("scanning", total=total)
                    run = run_local(
                        targets,
                        choice,
                        quarantine=quarantine,
                        webhook_url=webhook,
                        on_progress=lambda n: advance(progress, task, n),
                    )
                results, interrupted = run.results, run.interrupted
        except KeyboardInterrupt as stop:  # before the pipeline was up: nothing to report
            _say("interrupted")
            sys.exit(getattr(stop, "status", 130))
    elapsed = time.monotonic() - started
    if as_json:
        for result in results:
            click.echo(json.dumps(result.as_json()), file=results_out)
    else:
        _print_results(results, expected)
    counts: dict[str, int] = {}
    for result in results:
        counts[result.verdict] = counts.get(result.verdict, 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "nothing finished"
    rate = len(results) / elapsed if elapsed else 0.0
    _say(f"{len(results)} files in {elapsed:.1f}s ({rate:.1f}/s): {summary}")
    if interrupted is not None:
        _say(f"interrupted: {len(results)} of {len(targets)} finished")
        sys.exit(interrupted.status)
    if expected is not None:
        wrong = [r.key for r in results if expected.get(r.key) != r.verdict]
        if wrong:
            _say(f"unexpected verdict for {', '.join(wrong)}")
            sys.exit(1)
        _say("every sample got the verdict it was made for")
        sys.exit(0)
    sys.exit(exit_status(results))


_VERDICT_COLORS = {"clean": "green", "infected": "red", "unscannable": "yellow", "error": "red"}


def _emit_table(title: str, columns: list[str], rows: list[list[str]], verdict_at: int) -> None:
    """A table on a terminal; elsewhere (a pipe, a file) one tab-separated line per row
    under a header line, never wrapped, so scripts can cut and grep it."""
    if not out.is_terminal:
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = list(row)
        color = _VERDICT_COLORS.get(cells[verdict_at])
        if color:
            cells[verdict_at] = f"[{color}]{cells[verdict_at]}[/]"
        table.add_row(*cells)
    out.print(table)


def _print_results(results: list[Any], expected: dict[str, str] | None) -> None:
    columns = ["file", *(["made to be"] if expected is not None else [])]
    columns += ["verdict", "action", "signature / reason / error", "path"]
    rows = []
    for r in results:
        detail = ", ".join(r.signatures) or r.reason or r.error or ""
        path = " → ".join(s for s in r.execution.get("states", []) if s not in _COMMON_STATES)
        row = [r.key]
        if expected is not None:
            row.append(expected.get(r.key, ""))
        rows.append([*row, r.verdict, r.action, detail, path])
    _emit_table("Scan results", columns, rows, verdict_at=columns.index("verdict"))


@local.command("serve", context_settings={"help_option_names": ["--help", "-h"]})
@click.option(
    "--port",
    default=5000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port on 127.0.0.1.",
)
@click.option("--definitions", type=click.Path(path_type=Path))
@click.option("--no-quarantine", is_flag=True)
@click.option("--webhook", metavar="URL")
@click.option(
    "--for", "seconds", type=click.FloatRange(min=0), help="Stop after this many seconds."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the endpoint and names as one JSON object."
)
def local_serve(
    port: int,
    definitions: Path | None,
    no_quarantine: bool,
    webhook: str | None,
    seconds: float | None,
    as_json: bool,
) -> None:
    """Keep the emulated AWS on 127.0.0.1:PORT and scan whatever is uploaded.

    Prints the endpoint, bucket, quarantine bucket, audit table and state machine
    ARN, then one line per ended execution (uploads, rescans, redrives).
    """
    from scanctl.serve import PortInUse, check_port, serve

    try:
        check_port(port)  # before anything slow: a busy port is one sentence, now
    except PortInUse as busy:
        _fail(str(busy))
    restore_signals = _stop_on_signals()
    with contextlib.ExitStack() as signals, tempfile.TemporaryDirectory(prefix="scanctl-") as tmp:
        signals.callback(restore_signals)
        from functions.scan_object.app import reset_scanner
        from scanctl.local import choose_definitions

        try:
            choice = choose_definitions(definitions, Path(tmp))
        except FileNotFoundError as bad:
            _fail(str(bad))
        try:
            serve(
                port,
                choice,
                Path(tmp),
                quarantine=not no_quarantine,
                webhook_url=webhook,
                max_seconds=seconds,
                as_json=as_json,
            )
        except PortInUse as busy:
            _fail(str(busy))
        except KeyboardInterrupt:
            _say("stopped")
        finally:
            reset_scanner()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per sample.")
def demo(as_json: bool) -> None:
    """Scan generated samples (clean, EICAR plain/zipped/nested, encrypted zip).

    Exits 0 when every sample got the verdict it was made for.
    """
    from scanctl.local import collect

    with tempfile.TemporaryDirectory(prefix="scanctl-samples-") as tmp:
        root = Path(tmp) / "samples"
        root.mkdir()
        expected = {}
        for name, (content, verdict) in samples.demo_samples().items():
            (root / name).write_bytes(content)
            expected[name] = verdict
        targets = collect([root])
        _run_and_report(targets, None, True, None, as_json, expected=expected)


# -- operating a deployment ------------------------------------------------------------------------


def _aws_options(fn: Any) -> Any:
    fn = click.option("--stack", default=DEFAULT_STACK, show_default=True)(fn)
    fn = click.option(
        "--state-machine-arn",
        "--state-machine",
        "state_machine_arn",
        help="Instead of reading the stack's outputs.",
    )(fn)
    fn = click.option("--table", help="Audit table name, instead of the stack's outputs.")(fn)
    fn = click.option("--endpoint-url", help="Any AWS-compatible endpoint.")(fn)
    fn = click.option("--region")(fn)
    return fn


def _clients(endpoint_url: str | None, region: str | None, *services: str) -> list[Any]:
    import boto3

    session = boto3.session.Session(region_name=region)
    return [session.client(s, endpoint_url=endpoint_url) for s in services]


def _deployment(
    stack: str,
    state_machine_arn: str | None,
    table: str | None,
    endpoint_url: str | None,
    region: str | None,
    needs: tuple[str, ...] = ("state_machine_arn", "table"),
    **explicit: str | None,
) -> Any:
    """The deployment's resources: the ones given, and the stack's outputs for the rest."""
    from scanctl.ops import resolve_deployment

    [cfn] = _clients(endpoint_url, region, "cloudformation")
    return resolve_deployment(cfn, stack, state_machine_arn, table, needs, **explicit)


def _operator(fn: Any) -> Any:
    """Turn OperatorError and AWS errors into one line and exit status 2."""
    import functools

    from botocore.exceptions import BotoCoreError, ClientError

    from scanctl.ops import OperatorError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OperatorError as bad:
            _fail(str(bad))
        except (ClientError, BotoCoreError) as aws:
            _fail(f"AWS said: {aws}")

    return wrapper


@main.command()
@click.argument("uri")
@click.option(
    "--mode",
    type=click.Choice(["all", "unscanned", "outdated"]),
    default="all",
    show_default=True,
    help="all; only objects never scanned; or those and objects scanned before "
    "--scanned-before or with other definitions than --definitions.",
)
@click.option("--scanned-before", metavar="WHEN", help="(outdated) e.g. 30d, 24h, or an ISO time.")
@click.option("--definitions", "definitions_version", metavar="VERSION", help="(outdated)")
@click.option("--inventory", metavar="S3_URI", help="List from this S3 Inventory manifest.json.")
@click.option("--watch", is_flag=True, help="Follow the run until it ends.")
@click.option(
    "--local",
    "client_side",
    is_flag=True,
    help="List and start the scans from this machine (no Rescan state machine needed).",
)
@click.option(
    "--dry-run", is_flag=True, help="List the keys that would be rescanned; start nothing."
)
@click.option(
    "--rate",
    default=50.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="(--local) StartExecution calls per second.",
)
@click.option("--rescan-state-machine-arn", help="Instead of reading the stack's outputs.")
@_aws_options
@_operator
def rescan(
    uri: str,
    mode: str,
    scanned_before: str | None,
    definitions_version: str | None,
    inventory: str | None,
    watch: bool,
    client_side: bool,
    dry_run: bool,
    rate: float,
    rescan_state_machine_arn: str | None,
    **aws: Any,
) -> None:
    """Scan objects that already exist under s3://bucket/prefix.

    By default this starts the Rescan state machine (visible and redrivable in
    the console): a Distributed Map lists the bucket and sends the objects the
    mode asks for to the scan queue. --local lists and starts from here instead.
    """
    from scanctl.ops import (
        parse_moment,
        parse_s3_uri,
        rescan_picker,
        rescan_progress,
        start_rescan,
    )
    from scanctl.ops import rescan as client_rescan

    bucket, prefix = parse_s3_uri(uri)
    if mode == "outdated" and not (scanned_before or definitions_version):
        _fail("--mode outdated needs --scanned-before or --definitions (or both)")
    if mode != "outdated" and (scanned_before or definitions_version):
        _fail("--scanned-before and --definitions go with --mode outdated")
    if inventory and (client_side or dry_run):
        _fail("--inventory is read by the Rescan state machine; --local and --dry-run list")
    before = parse_moment(scanned_before, "--scanned-before") if scanned_before else None
    s3, sfn, ddb = _clients(aws["endpoint_url"], aws["region"], "s3", "stepfunctions", "dynamodb")
    if client_side or dry_run:
        deployment = _deployment(**aws, needs=("state_machine_arn",))
        with _progress() as progress:
            task = progress.add_task("listing" if dry_run else "listing and starting", total=None)
            summary = client_rescan(
                s3,
                sfn,
                deployment.need(
                    deployment.state_machine_arn, "state machine", "--state-machine-arn"
                ),
                bucket,
                prefix,
                dry_run=dry_run,
                rate_per_s=rate,
                on_object=lambda obj: progress.advance(task),
                pick=rescan_picker(
                    s3,
                    bucket,
                    mode,
                    before,
                    definitions_version,
                    ddb,
                    deployment.table_name,
                ),
            )
        if dry_run:
            for key in summary.keys:
                click.echo(key)
            _say(
                f"dry run: {len(summary.keys)} of {summary.objects} objects would be rescanned "
                f"(mode {mode}; {summary.up_to_date} up to date, {summary.skipped} folder markers)"
            )
            return
        _say(
            f"run {summary.run_id}: {summary.objects} objects, {summary.started} executions "
            f"started, {summary.already_started} already started, {summary.up_to_date} up to "
            f"date, {summary.skipped} folder markers skipped, {summary.throttled} throttled "
            "retries"
        )
        return
    deployment = _deployment(
        **aws, needs=("RescanStateMachineArn",), RescanStateMachineArn=rescan_state_machine_arn
    )
    arn = deployment.need(
        deployment.outputs.get("RescanStateMachineArn"),
        "Rescan state machine",
        "--rescan-state-machine-arn (or --local)",
    )
    source = deployment.outputs.get("SourceBucketName")
    if source and source != bucket:
        _fail(f"the Rescan state machine scans s3://{source}, not s3://{bucket}")
    manifest = parse_s3_uri(inventory, need_key=True) if inventory else None
    run_id, execution = start_rescan(
        sfn,
        arn,
        prefix,
        mode=mode,
        scanned_before=before,
        definitions_version=definitions_version,
        inventory=manifest,
    )
    click.echo(execution)
    _say(f"rescan run {run_id} started (mode {mode}); see it in the Step Functions console")
    if not watch:
        return
    with _progress() as progress:
        task = progress.add_task("rescanning", total=None)
        while True:
            state = rescan_progress(sfn, execution)
            items = state["items"]
            progress.update(
                task, total=items.get("total") or None, completed=items.get("succeeded", 0)
            )
            if state["status"] != "RUNNING":
                break
            time.sleep(2)
    _say(f"rescan run {run_id}: {state['status']}, items {items}")
    if state["status"] != "SUCCEEDED":
        sys.exit(2)


@main.command()
@click.argument("uri")
@click.option(
    "--apply", is_flag=True, help="Merge the statements into the bucket's policy (by Sid)."
)
@click.option("--dry-run", is_flag=True, help="With --apply: show the change, write nothing.")
@click.option("--reader-role", multiple=True, help="A scanner role that reads objects.")
@click.option("--tagging-role", multiple=True, help="A scanner role that writes scan-* tags.")
@click.option(
    "--unscanned-reader",
    multiple=True,
    help="An IAM role or user ARN that may read objects that are not clean (admins, replication).",
)
@_aws_options
@_operator
def policy(
    uri: str,
    apply: bool,
    dry_run: bool,
    reader_role: tuple[str, ...],
    tagging_role: tuple[str, ...],
    unscanned_reader: tuple[str, ...],
    **aws: Any,
) -> None:
    """The access gate for s3://BUCKET: print its statements, or merge them in.

    Without --apply, prints the statements as JSON. The scanner's roles come
    from the stack's outputs unless given.
    """
    from functions.shared.access_gate import statements
    from scanctl.ops import gate_roles, merge_gate, parse_s3_uri

    bucket, _ = parse_s3_uri(uri)
    if dry_run and not apply:
        _fail("--dry-run goes with --apply")
    deployment = None
    if not (reader_role and tagging_role):
        deployment = _deployment(**aws, needs=("AccessGateReaderRoleArns",))
    readers, taggers = gate_roles(deployment, reader_role, tagging_role)
    gate = statements(
        bucket,
        scanner_roles=readers,
        tagging_roles=taggers,
        unscanned_readers=list(unscanned_reader),
    )
    if not apply:
        click.echo(json.dumps(gate, indent=2))
        return
    [s3] = _clients(aws["endpoint_url"], aws["region"], "s3")
    change = merge_gate(s3, bucket, gate, apply=not dry_run)
    if not change.changed:
        _say(f"s3://{bucket}: the policy already holds the gate; nothing changed")
        return
    click.echo(change.diff())
    _say(f"s3://{bucket}: {'would change (dry run)' if dry_run else 'policy updated'}")


@main.command()
@click.option("--since", default="24h", show_default=True, help="How far back, e.g. 30m, 24h, 7d.")
@click.option(
    "--as-new",
    is_flag=True,
    help="Start new executions (<name>-r<n>) instead of redriving in place.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be re-run; change nothing.")
@_aws_options
@_operator
def redrive(since: str, as_new: bool, dry_run: bool, **aws: Any) -> None:
    """Re-run executions that failed, timed out or were aborted.

    Within 14 days of their end they are redriven in place, as the console's
    Redrive does: same execution, resumed at the state that failed. Older ones
    (or all, with --as-new) start again as new executions with the same input.
    """
    from scanctl.ops import parse_duration, redrive_express
    from scanctl.ops import redrive as do_redrive

    window = parse_duration(since)
    deployment = _deployment(**aws)
    sfn, ddb = _clients(aws["endpoint_url"], aws["region"], "stepfunctions", "dynamodb")
    arn = deployment.need(deployment.state_machine_arn, "state machine", "--state-machine-arn")
    summary = do_redrive(sfn, arn, window, as_new=as_new, dry_run=dry_run)
    if deployment.table_name:
        # Express executions cannot be redriven: their failures, from the audit
        # table, start again as new executions on the Standard machine.
        redrive_express(ddb, deployment.table_name, sfn, arn, window, summary, dry_run=dry_run)
    would = "would be " if dry_run else ""
    for name in summary.redriven:
        click.echo(f"{would}redriven {name}")
    for original, new in summary.restarted:
        click.echo(f"{would}restarted {original} as {new}")
    for name, why in summary.not_redrivable:
        click.echo(f"not redrivable {name}: {why}")
    _say(
        f"{summary.unsuccessful} unsuccessful executions in the last {since}: "
        f"{len(summary.redriven)} {would}redriven, {len(summary.restarted)} {would}restarted, "
        f"{len(summary.not_redrivable)} not redrivable, "
        f"{len(summary.already_handled)} already re-run"
        + (f", {summary.throttled} throttled retries" if summary.throttled else "")
    )


@main.command("replay-failures")
@click.option("--queue-url", help="The recorder's DLQ, instead of the stack's outputs.")
@click.option("--function", help="The failure recorder, instead of the stack's outputs.")
@click.option("--dry-run", is_flag=True, help="Count the messages; record and remove nothing.")
@_aws_options
@_operator
def replay_failures(queue_url: str | None, function: str | None, dry_run: bool, **aws: Any) -> None:
    """Give the failure recorder what is in its dead-letter queue, once it works again.

    A failure the recorder could not record (after EventBridge's and Lambda's
    retries, or an Express run's own) waits there, 14 days at most. Each message
    recorded is removed; one that fails again stays, and the reason is printed.
    """
    from scanctl.ops import replay_failures as replay

    deployment = _deployment(
        **aws,
        needs=("FailureDeadLetterQueueUrl", "FailureRecorderFunctionName"),
        FailureDeadLetterQueueUrl=queue_url,
        FailureRecorderFunctionName=function,
    )
    url = deployment.need(
        deployment.outputs.get("FailureDeadLetterQueueUrl"), "recorder's DLQ", "--queue-url"
    )
    name = deployment.need(
        deployment.outputs.get("FailureRecorderFunctionName"), "failure recorder", "--function"
    )
    sqs, lam = _clients(aws["endpoint_url"], aws["region"], "sqs", "lambda")
    summary = replay(sqs, lam, url, name, dry_run=dry_run)
    would = "would be " if dry_run else ""
    for message_id, why in summary.failed:
        click.echo(f"kept {message_id}: {why}")
    _say(f"{len(summary.replayed)} {would}recorded and removed, {len(summary.failed)} kept")
    if summary.failed:
        raise SystemExit(1)


def _plain(value: Any) -> Any:
    """DynamoDB's numbers as JSON numbers (they come back as Decimal)."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def _print_items(
    items: list[dict[str, Any]], title: str, as_json: bool, failed: bool = False
) -> None:
    if as_json:
        for item in items:
            click.echo(json.dumps(item, default=_plain))
        return
    if failed:
        columns = ["scan", "object", "version", "failed state", "error", "verdict reached"]
        rows = [
            [
                str(item.get("scanId", "")).split("#")[0],
                item.get("object", ""),
                str(item.get("versionId") or ""),
                str(item.get("failedState") or ""),
                _error_text(item.get("error")),
                str(item.get("verdict") or ""),
            ]
            for item in items
        ]
        _emit_table(title, columns, rows, verdict_at=5)
        return
    columns = ["scan", "object", "version", "verdict", "signatures / reason / error", "action"]
    rows = []
    for item in items:
        detail = (
            ", ".join(item.get("signatures") or [])
            or (item.get("reason") or "")
            or _error_text(item.get("error"))
        )
        rows.append(
            [
                str(item.get("scanId", "")).split("#")[0],
                item.get("object", ""),
                str(item.get("versionId") or ""),
                str(item.get("verdict") or ""),
                detail,
                str(item.get("action") or ""),
            ]
        )
    _emit_table(title, columns, rows, verdict_at=3)


def _error_text(error: Any) -> str:
    if not error:
        return ""
    if isinstance(error, dict):
        name, cause = error.get("error", ""), str(error.get("cause") or "")
        return f"{name}: {cause[:200]}" if cause else str(name)
    return str(error)


@main.command()
@click.argument("uri")
@click.option("--json", "as_json", is_flag=True)
@_aws_options
@_operator
def history(uri: str, as_json: bool, **aws: Any) -> None:
    """Every recorded scan of s3://bucket/key, oldest first."""
    from scanctl.ops import history as read_history
    from scanctl.ops import parse_s3_uri

    bucket, key = parse_s3_uri(uri, need_key=True)
    deployment = _deployment(**aws, needs=("table",))
    [ddb] = _clients(aws["endpoint_url"], aws["region"], "dynamodb")
    items = read_history(
        ddb, deployment.need(deployment.table_name, "audit table", "--table"), bucket, key
    )
    if not items:
        _say(f"no scans recorded for {uri}")
    _print_items(items, f"History of {uri}", as_json)


@main.command()
@click.option(
    "--verdict",
    type=click.Choice(["clean", "infected", "unscannable", "skipped", "error", "released"]),
    default="infected",
    show_default=True,
)
@click.option("--failed", is_flag=True, help="Failed runs instead, whatever their verdict.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="(--failed) Also failed runs whose object a later scan handled.",
)
@click.option("--since", default="24h", show_default=True)
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
@_aws_options
@_operator
def recent(
    verdict: str,
    failed: bool,
    show_all: bool,
    since: str,
    limit: int,
    as_json: bool,
    **aws: Any,
) -> None:
    """Recent scans with one verdict (or failed runs), newest first."""
    from scanctl.ops import handled_later, parse_duration
    from scanctl.ops import recent as read_recent

    if show_all and not failed:
        _fail("--all goes with --failed")
    window = parse_duration(since)
    deployment = _deployment(**aws, needs=("table",))
    [ddb] = _clients(aws["endpoint_url"], aws["region"], "dynamodb")
    table = deployment.need(deployment.table_name, "audit table", "--table")
    items = read_recent(ddb, table, verdict, window, limit, failed=failed)
    hidden = 0
    if failed and not show_all:
        # A failure a later run of the same object version made good is history.
        kept = [item for item in items if not handled_later(ddb, table, item)]
        hidden, items = len(items) - len(kept), kept
    if failed:
        verdict = "failed"
    _say(
        f"{len(items)} {verdict} scans since {dt.datetime.now(dt.UTC) - window:%Y-%m-%d %H:%M} UTC"
        + (f" ({hidden} handled by a later run hidden; --all shows them)" if hidden else "")
    )
    _print_items(items, f"Recent {verdict} scans", as_json, failed=failed)


@main.command()
@click.argument("uri")
@click.option("--version-id", help="The version held infected (versioned buckets).")
@click.option("--etag", help="The content held infected (unversioned buckets).")
@click.option("--reason", required=True, help="Why: a false positive, and who said so.")
@click.option("--no-rescan", is_flag=True, help="Do not scan the version again afterwards.")
@click.option("--event-bus", help="The results bus, instead of the stack's outputs.")
@click.option("--notify-function", help="Notify Webhook, instead of the stack's outputs.")
@_aws_options
@_operator
def release(
    uri: str,
    version_id: str | None,
    etag: str | None,
    reason: str,
    no_rescan: bool,
    event_bus: str | None,
    notify_function: str | None,
    **aws: Any,
) -> None:
    """Release one version held infected (a false positive), then scan it again.

    A version once found infected stays infected, whatever a later scan or a
    failed run says, until it is released here. The release is recorded in the
    audit table (verdict "released"), published as an Object Released event and
    sent to the webhook as object.released; if the version is still in the
    bucket, a scan then decides again. Nothing is restored from quarantine.
    """
    from functions.shared.contracts import ObjectRef
    from scanctl.ops import parse_s3_uri
    from scanctl.ops import release as do_release

    bucket, key = parse_s3_uri(uri, need_key=True)
    if bool(version_id) == bool(etag):
        _fail("name the version: --version-id (versioned bucket) or --etag (unversioned)")
    deployment = _deployment(
        **aws,
        needs=("table", "state_machine_arn"),
        ResultEventBusArn=event_bus,
        NotifyWebhookFunctionName=notify_function,
    )
    table = deployment.need(deployment.table_name, "audit table", "--table")
    services = ("dynamodb", "events", "lambda", "s3", "stepfunctions", "sts")
    made = _clients(aws["endpoint_url"], aws["region"], *services)
    clients = dict(zip(services, made, strict=True))
    notify = deployment.outputs.get("NotifyWebhookFunctionName")
    summary = do_release(
        clients,
        table,
        ObjectRef(bucket, key, version_id, etag=etag),
        reason,
        _caller(clients["sts"]),
        state_machine_arn=deployment.state_machine_arn,
        event_bus=deployment.outputs.get("ResultEventBusArn"),
        notify_function=None if notify in (None, "", "none") else notify,
        rescan_after=not no_rescan,
    )
    hold = summary.released["hold"]
    click.echo(
        f"released {uri} ({version_id or etag}), held infected since {hold['foundAt']} "
        f"({hold['signature']})"
    )
    for note in summary.notes:
        click.echo(f"note: {note}")
    _say(
        f"recorded in {table}; event {'published' if summary.published else 'NOT published'}"
        + {None: "", True: "; webhook notified", False: "; webhook NOT notified"}[summary.notified]
        + (f"; scanning again as {summary.rescan}" if summary.rescan else "")
    )


def _caller(sts: Any) -> str:
    """Who released: the caller's ARN, as IAM knows it (else the local user)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return str(sts.get_caller_identity()["Arn"])
    except (ClientError, BotoCoreError):
        import getpass

        return getpass.getuser()
