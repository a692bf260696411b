"""The ``databuild`` command line: argument parsing and output only.

Every command talks to the graph service over HTTP (``client``); ``build`` starts an
embedded service for its duration when none runs, and read-only commands fall back to a
read-only view of the Build Event Log. Errors are printed as one clear line, never as a
traceback. Exit codes (docs/cli.md): 0 success; 1 the operation failed (a build that did
not succeed, an unknown want or run, an unreachable service, a storage error); 2 usage or
configuration error (Click's usage errors, ``InvalidInput`` and its ``ConfigError``); 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import gc
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import click
from rich.markup import escape

from databuild import __version__
from databuild.cli import output
from databuild.cli import service_logging as logs
from databuild.cli.build import (
    TERMINAL,
    BuildInterrupted,
    HttpBuildApi,
    follow_build,
    print_notices,
    print_outcome,
)
from databuild.cli.client import Client, Params, find_service_url
from databuild.cli.config_commands import config
from databuild.cli.partition_commands import partition
from databuild.cli.sla import sla
from databuild.config import GraphConfig, find_config, load_config, parse_duration
from databuild.core import backfill
from databuild.core.data_time import format_timestamp, parse_data_date
from databuild.core.errors import ConfigError, DataBuildError, InvalidInput, ServiceError
from databuild.core.refs import parse_ref
from databuild.service.head_start import HeadStart
from databuild.service.views import graph_view

SCAFFOLD = Path(__file__).parent / "scaffold" / "calendar"


@dataclass
class Context:
    config_path: str | None
    url: str | None
    as_json: bool

    def config(self) -> GraphConfig:
        path = Path(self.config_path) if self.config_path else find_config(Path.cwd())
        return load_config(path)

    def token(self, config: GraphConfig | None) -> str | None:
        name = config.service.token_env if config is not None else "DATABUILD_TOKEN"
        return os.environ.get(name) or None

    @contextlib.contextmanager
    def service(self, *, write: bool) -> Iterator[Client]:
        """A client for the running service; for reads, a read-only view when none runs."""
        config = None if self.url and not self.config_path else self.config()
        url = find_service_url(config, self.url)
        if url is not None:
            with Client(url, token=self.token(config)) as client:
                yield client
            return
        assert config is not None
        if write:
            raise ServiceError(
                f"no DataBuild service is running for graph {config.name!r} "
                f"(looked for {config.state_dir / 'service.json'}); start one with "
                "`databuild serve`, or use `databuild build`, which runs one for its duration"
            )
        # No service: answer reads from a read-only fold of the log, through the same API.
        server = _server()
        options = server.ServeOptions(port=0, read_only=True)
        with (
            server.EmbeddedService(config, options) as service,
            OfflineClient(service.url, token=None) as client,
        ):
            # Said once the log opened, so a storage error stays the only line.
            output.err_console.print(
                f"[yellow]note:[/yellow] no DataBuild service is running for graph "
                f"{escape(config.name)!r}: this is its Build Event Log as recorded; nothing runs, "
                "runs it left in flight show as interrupted (a service started with `databuild "
                "serve` or `databuild build` runs them again)"
            )
            yield client


class OfflineClient(Client):
    """The client of a read-only view when no service is up. Nothing runs then, so a run
    the log still records as queued or running was interrupted (the next service records it
    as lost and runs it again), and so were the wants and partitions it was building: say
    so rather than show them as running."""

    def get(
        self, path: str, params: Params | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        document = super().get(path, params, timeout)
        _mark_interrupted(document)
        return document


INTERRUPTED_RUN = (
    "interrupted: the service that ran it is gone; a service started again runs it again"
)
INTERRUPTED_WANT = "interrupted: no service is running; it goes on when one starts"


def _mark_interrupted(node: Any) -> None:
    """In place: runs, wants and partitions shown in flight are shown interrupted."""
    if isinstance(node, list):
        for item in node:
            _mark_interrupted(item)
        return
    if not isinstance(node, dict):
        return
    status = node.get("status")
    if "job_run_id" in node and "queued_at" in node and status in ("queued", "running"):
        node["status"] = "interrupted"
        node["message"] = node.get("message") or INTERRUPTED_RUN
    elif status == "building" and ("root_want_id" in node or "want_ids" in node):
        # a want, or a partition
        node["status"] = "interrupted"
        node["message"] = node.get("message") or INTERRUPTED_WANT
    for value in node.values():
        if isinstance(value, list | dict):
            _mark_interrupted(value)


def _server() -> ModuleType:
    """The service stack (FastAPI, uvicorn: ~0.3 s to import), loaded only by the commands
    that run a service in this process; the rest of the CLI starts without it."""
    enabled = gc.isenabled()
    gc.disable()  # see ``entry``: no collection while the stack's objects are made
    try:
        return importlib.import_module("databuild.service.server")
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


EXIT_FAILED = 1  # the operation was understood and failed
EXIT_USAGE = 2  # the command, its input or the configuration is wrong (Click uses 2 too)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def exit_code(error: DataBuildError) -> int:
    return EXIT_USAGE if isinstance(error, InvalidInput) else EXIT_FAILED


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    # One line, whatever the message: a driver's text (libpq's "connection refused" hint)
    # can span lines, and scripts and log shippers read an error as one line.
    one_line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    output.err_console.print(f"[red]error:[/red] {escape(one_line)}")
    sys.exit(code)


class DataBuildGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DataBuildError as exc:
            fail(str(exc), exit_code(exc))
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)


@click.group(cls=DataBuildGroup)
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="PATH",
    envvar="DATABUILD_CONFIG",
    help="databuild.toml (default: $DATABUILD_CONFIG, then found from the current directory up)",
)
@click.option(
    "--url",
    metavar="URL",
    help="service URL (default: $DATABUILD_URL, then the running service of the graph)",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.version_option(__version__, prog_name="databuild")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, url: str | None, as_json: bool) -> None:
    """DataBuild: declare the partitions you want; the graph builds them."""
    ctx.obj = Context(config_path, url, as_json)


def _ctx() -> Context:
    obj: Context = click.get_current_context().obj
    return obj


def _duration(value: str | None, option: str) -> int:
    if value is None:
        return 0
    try:
        return int(parse_duration(value))
    except ValueError as exc:
        raise InvalidInput(f"{option}: {exc}") from None


def _want_body(
    refs: tuple[str, ...], data_date: str | None, sla: str | None, ttl: str | None
) -> dict[str, Any]:
    for raw in refs:
        parse_ref(raw)
    body: dict[str, Any] = {
        "partition_refs": list(refs),
        "sla_seconds": _duration(sla, "--sla"),
        "ttl_seconds": _duration(ttl, "--ttl"),
        "source": "cli",
    }
    if data_date:
        body["data_timestamp"] = parse_data_date(data_date)
    return body


# ---- init / serve / build ----------------------------------------------------------------
@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Scaffold a working example graph (the calendar example) in DIRECTORY."""
    if directory.exists() and any(directory.iterdir()):
        raise InvalidInput(f"{directory} is not empty; pick a new directory")
    shutil.copytree(
        SCAFFOLD, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    output.console.print(
        f"Created {escape(str(directory))}. Next:\n  cd {escape(str(directory))} && databuild build summary/all"
    )


@cli.command()
@click.option("--host", help="address to listen on (default from [service] host: 127.0.0.1)")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="port (default from [service] port; 0 = any free port)",
)
@click.option(
    "--log-level",
    type=click.Choice(logs.LEVELS),
    default="info",
    show_default=True,
    help="least severe log records shown",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object per line, for log shippers",
)
@click.option(
    "--advertise-url",
    help="URL at which the other replicas of a shared PostgreSQL log reach this one while "
    "it leads (default: the URL it serves at)",
)
def serve(
    host: str | None,
    port: int | None,
    log_level: str,
    log_format: str,
    advertise_url: str | None,
) -> None:
    """Run the graph service: HTTP API, continuous reconciliation."""
    # `kill -USR1 PID` writes every thread's stack to stderr (docs/operations.md): what a
    # service that seems stuck is doing, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        config = _ctx().config()
        server = _server()
        options = server.options_from(config, host, port)
        advertised = server.checked_advertise_url(advertise_url)
        service = server.Service(
            config,
            dataclasses.replace(options, log_level=log_level, advertise_url=advertised),
        )
        logs.configure(log_level, log_format)  # after uvicorn's Config, which sets up its own
        announcer = logs.Announcer(log_format)
        announcer.add(
            logging.INFO,
            f"DataBuild graph {escape(config.name)!r} serving at {service.url}",
            "serving",
            graph=config.name,
            url=service.url,
        )
        for upstream in config.upstreams:
            announcer.add(
                logging.INFO,
                f"following upstream graph {escape(upstream.name)!r} at {escape(upstream.url)}",
                "following upstream graph",
                upstream=upstream.name,
                url=upstream.url,
            )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(announcer.serve(service))
    except DataBuildError as exc:
        if log_format != "json":
            raise
        logs.configure(log_level, log_format)
        logs.fatal(str(exc))  # the "error:" line, as a JSON record
        sys.exit(exit_code(exc))


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@click.option(
    "--data-date", help="business date of the data (YYYY-MM-DD); default from the ref, else today"
)
@click.option("--sla", help="ready within this long after the data date, e.g. 9h")
@click.option("--ttl", help="give up this long after the data date, e.g. 30d")
@click.option("-q", "--quiet", is_flag=True, help="no progress output")
@click.option(
    "-j",
    "--parallel",
    type=click.IntRange(1, 1024),
    help="job processes at once (embedded service only)",
)
def build(
    refs: tuple[str, ...],
    data_date: str | None,
    sla: str | None,
    ttl: str | None,
    quiet: bool,
    parallel: int | None,
) -> None:
    """Build partitions: create wants and follow them until they are satisfied or fail."""
    ctx = _ctx()
    body = _want_body(refs, data_date, sla, ttl)
    config = ctx.config()
    url = find_service_url(config, ctx.url)
    started = time.monotonic()
    if url is not None:
        try:
            with Client(url, token=ctx.token(config)) as client:
                progress = follow_build(HttpBuildApi(client), body, quiet=quiet or ctx.as_json)
        except KeyboardInterrupt as stop:
            _client_build_interrupted(url, stop)
    else:
        # the warm workers start now, while the service stack is imported (head_start)
        head_start = HeadStart.begin(config, parallel)
        try:
            server = _server()
            inprocess = importlib.import_module("databuild.cli.inprocess")
            options = server.ServeOptions(port=0, max_parallel=parallel, token=ctx.token(config))
        except BaseException:
            if head_start is not None:
                head_start.abandon()
            raise
        embedded = server.EmbeddedService(config, options, head_start)
        try:
            with embedded as service:
                api = inprocess.InProcessBuildApi(service)
                progress = follow_build(api, body, quiet=quiet or ctx.as_json)
        except KeyboardInterrupt as stop:
            if embedded.thread.is_alive():
                # Ctrl-C while it started (it may be running recovered runs already): the
                # with statement does not stop what it did not finish entering
                embedded.__exit__(None, None, None)
            # its fold still says which runs were in flight when it stopped (and killed them)
            in_flight = sorted(
                run.job_run_id
                for run in embedded.host.state.runs.hot.values()
                if run.status.value in ("queued", "running")
            )
            _embedded_build_interrupted(refs, stop, in_flight)
    elapsed = time.monotonic() - started
    ok = all(w["status"] == "satisfied" for w in progress.wants.values())
    if ctx.as_json:
        output.print_json(
            {
                "ok": ok,
                "seconds": round(elapsed, 3),
                "runs": progress.runs_queued,
                "wants": list(progress.wants.values()),
            }
        )
    else:
        print_outcome(progress)
        output.console.print(f"[dim]{elapsed:.2f}s[/dim]")
    if not ok:
        sys.exit(EXIT_FAILED)


SHOWN_WANTS = 10


def _client_build_interrupted(url: str, stop: KeyboardInterrupt) -> NoReturn:
    """Ctrl-C of a build against a running service: only the following stopped."""
    say = output.err_console.print
    if not isinstance(stop, BuildInterrupted):
        say(
            f"[red]interrupted[/red] while asking the service at {escape(url)} for the wants: "
            "they may have been created and go on there; `databuild want list --status "
            "active` shows them, `databuild want cancel ID` cancels one"
        )
        sys.exit(130)
    going = [w for w in stop.progress.wants.values() if w["status"] not in TERMINAL]
    say(
        f"[red]interrupted[/red]: stopped following; the build goes on in the service at "
        f"{escape(url)} ({len(going)} of {len(stop.progress.wants)} wants not finished). "
        "Cancel them with `databuild want cancel ID`:"
    )
    for w in going[:SHOWN_WANTS]:
        say(f"  databuild want cancel {escape(w['want_id'])}    # {escape(w['partition_ref'])}")
    if len(going) > SHOWN_WANTS:
        say(f"  ... and {len(going) - SHOWN_WANTS} more: databuild want list --status active")
    sys.exit(130)


def _embedded_build_interrupted(
    refs: tuple[str, ...], stop: KeyboardInterrupt, runs: list[str]
) -> NoReturn:
    """Ctrl-C of a build with its own embedded service: the service stopped with it."""
    again = "databuild build " + " ".join(refs)
    killed = (
        f"{len(runs)} job run(s) in flight were stopped ({escape(', '.join(runs[:SHOWN_WANTS]))}"
        f"{', ...' if len(runs) > SHOWN_WANTS else ''}: `databuild runs log ID` shows what "
        "they printed)"
        if runs
        else "no job run was in flight"
    )
    if isinstance(stop, BuildInterrupted):
        wants = stop.progress.wants.values()
        going = sum(1 for w in wants if w["status"] not in TERMINAL)
        unfinished = f"{going} of {len(wants)} wants not finished"
    else:
        unfinished = "its wants may not have been created yet"
    output.err_console.print(
        f"[red]interrupted[/red]: the build stopped with its embedded service; {killed}; "
        f"{unfinished}. What was asked stays in the graph's Build Event Log: "
        f"`{escape(again)}` (or `databuild serve`) takes it up where it was, re-running the "
        "interrupted runs"
    )
    sys.exit(130)


# ---- wants ---------------------------------------------------------------------------------
@cli.group()
def want() -> None:
    """Create, list, inspect and cancel wants."""


@want.command("create")
@click.argument("refs", nargs=-1, required=True)
@click.option("--data-date", help="business date of the data (YYYY-MM-DD)")
@click.option("--sla", help="ready within this long after the data date, e.g. 9h")
@click.option("--ttl", help="give up this long after the data date, e.g. 30d")
@click.option("--from", "from_date", help="a backfill: REF is a pattern; first date (YYYY-MM-DD)")
@click.option("--to", "to_date", help="a backfill: last date, included (YYYY-MM-DD)")
@click.option("--week", "step", flag_value="week", help="a backfill: one date every 7 days")
@click.option("--month", "step", flag_value="month", help="a backfill: one date a month")
def want_create(
    refs: tuple[str, ...],
    data_date: str | None,
    sla: str | None,
    ttl: str | None,
    from_date: str | None,
    to_date: str | None,
    step: str | None,
) -> None:
    """Declare that partitions should exist (idempotent).

    With --from/--to, REF is a pattern such as 'daily/date={date}' and one want is made for
    each partition of the range (a backfill; follow it with `databuild backfill status ID`).
    """
    ctx = _ctx()
    if any("{" in r for r in refs) or from_date or to_date or step:
        body = _backfill_body(refs, data_date, sla, ttl, from_date, to_date, step)
    else:
        body = _want_body(refs, data_date, sla, ttl)
    with ctx.service(write=True) as client:
        created = client.post("/api/v1/wants", body)
    print_notices(created)
    if ctx.as_json:
        output.print_json(created)
    elif created.get("backfill"):
        _print_backfill(created["backfill"])
    else:
        output.console.print(output.wants_table(created["wants"]))


def _backfill_body(
    refs: tuple[str, ...],
    data_date: str | None,
    sla: str | None,
    ttl: str | None,
    from_date: str | None,
    to_date: str | None,
    step: str | None,
) -> dict[str, Any]:
    if len(refs) != 1:
        raise InvalidInput(f"a backfill takes one partition pattern; {len(refs)} were given")
    if data_date:
        raise InvalidInput(
            "--data-date does not go with a backfill: each want has its partition's date"
        )
    spec = backfill.parse_backfill(refs[0], from_date, to_date, step or "day")
    return {
        "partition_pattern": spec.pattern,
        "from_date": spec.start.isoformat(),
        "to_date": spec.end.isoformat(),
        "step": spec.step.value,
        "sla_seconds": _duration(sla, "--sla"),
        "ttl_seconds": _duration(ttl, "--ttl"),
        "source": "cli",
    }


def _print_backfill(status: dict[str, Any]) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in status["by_status"].items())
    state = "done" if status["done"] else "in progress"
    output.console.print(
        f"backfill {status['backfill_id']}: {status['wants']} wants ({counts}); {state}",
        highlight=False,
    )
    if status["derived_wants"]:
        output.console.print(
            f"  and {status['derived_wants']} wants for their missing inputs", highlight=False
        )


@cli.group("backfill")
def backfill_group() -> None:
    """Follow backfills (made by `want create PATTERN --from ... --to ...`)."""


@backfill_group.command("status")
@click.argument("backfill_id")
def backfill_status(backfill_id: str) -> None:
    """A backfill's wants counted by status."""
    ctx = _ctx()
    with ctx.service(write=False) as client:
        status = client.get(f"/api/v1/backfills/{backfill_id}")
    if ctx.as_json:
        output.print_json(status)
    else:
        _print_backfill(status)


@want.command("list")
@click.option("--status", help="comma-separated statuses, or 'active'")
@click.option("--prefix", help="partition ref prefix")
@click.option("--root", "root_want_id", help="only this root want and the wants it caused")
@click.option(
    "--source",
    type=click.Choice(["cli", "api", "dashboard", "scheduled", "derived", "upstream_graph"]),
)
@click.option("--limit", type=click.IntRange(1, None), default=100, show_default=True)
def want_list(
    status: str | None, prefix: str | None, root_want_id: str | None, source: str | None, limit: int
) -> None:
    """List wants, oldest first."""
    ctx = _ctx()
    params = {
        k: v
        for k, v in {
            "status": status,
            "prefix": prefix,
            "root_want_id": root_want_id,
            "source": source,
        }.items()
        if v
    }
    with ctx.service(write=False) as client:
        wants = list(client.pages("/api/v1/wants", "wants", params, limit))
    if ctx.as_json:
        output.print_json({"wants": wants})
    else:
        output.console.print(output.wants_table(wants))


@want.command("status")
@click.argument("want_id")
def want_status(want_id: str) -> None:
    """A want's status, timeline, child wants and job runs."""
    ctx = _ctx()
    with ctx.service(write=False) as client:
        detail = client.get(f"/api/v1/wants/{want_id}")
    if ctx.as_json:
        output.print_json(detail)
    else:
        output.want_detail(detail)


@want.command("cancel")
@click.argument("want_id")
def want_cancel(want_id: str) -> None:
    """Cancel a want; work only it needed stops."""
    ctx = _ctx()
    with ctx.service(write=True) as client:
        view = client.delete(f"/api/v1/wants/{want_id}")
    if ctx.as_json:
        output.print_json(view)
    else:
        output.console.print(f"want {escape(want_id)}: {output.styled(view['status'])}")


# ---- partitions, runs, events, graph -------------------------------------------------------
@cli.command()
@click.argument("refs", nargs=-1)
@click.option("--prefix", help="partition ref prefix")
@click.option("--status", help="comma-separated: absent,building,waiting,backoff,live,failed")
@click.option(
    "--stale", is_flag=True, help="only live partitions built by another version of their job"
)
@click.option("--limit", type=click.IntRange(1, None), default=200, show_default=True)
def partitions(
    refs: tuple[str, ...], prefix: str | None, status: str | None, stale: bool, limit: int
) -> None:
    """Partitions and their state (or exactly REFS)."""
    ctx = _ctx()
    with ctx.service(write=False) as client:
        if refs:
            for raw in refs:
                parse_ref(raw)
            found = client.get("/api/v1/partitions", {"ref": list(refs)})["partitions"]
        else:
            params: dict[str, str] = {
                k: v for k, v in {"prefix": prefix, "status": status}.items() if v
            }
            if stale:
                params["stale"] = "true"
            found = list(client.pages("/api/v1/partitions", "partitions", params, limit))
    if ctx.as_json:
        output.print_json({"partitions": found})
    else:
        output.console.print(output.partitions_table(found))


@cli.group(invoke_without_command=True)
@click.option("--job", help="only runs of this job")
@click.option(
    "--status", help="comma-separated: queued,running,succeeded,failed,missing_deps,canceled"
)
@click.option("--limit", type=click.IntRange(1, None), default=50, show_default=True)
@click.pass_context
def runs(click_ctx: click.Context, job: str | None, status: str | None, limit: int) -> None:
    """Job runs, newest first; `runs show ID`, `runs log ID`."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = _ctx()
    params = {k: v for k, v in {"job": job, "status": status}.items() if v}
    with ctx.service(write=False) as client:
        found = list(client.pages("/api/v1/job-runs", "job_runs", params, limit))
    if ctx.as_json:
        output.print_json({"job_runs": found})
    else:
        output.console.print(output.runs_table(found))


@runs.command("show")
@click.argument("job_run_id")
def runs_show(job_run_id: str) -> None:
    """One job run."""
    ctx = _ctx()
    with ctx.service(write=False) as client:
        run = client.get(f"/api/v1/job-runs/{job_run_id}")
    if ctx.as_json:
        output.print_json(run)
    else:
        output.console.print(output.runs_table([run]))
        for item in run["missing"]:
            output.console.print(
                f"  {escape(item['partition_ref'])} misses {escape(', '.join(item['missing_refs']))}"
            )


@runs.command("log")
@click.argument("job_run_id")
@click.option("-f", "--follow", is_flag=True, help="keep printing while the run goes on")
@click.option(
    "--tail",
    "tail_lines",
    type=click.IntRange(1, None),
    metavar="N",
    help="only the last N lines (with -f: then follow)",
)
def runs_log(job_run_id: str, follow: bool, tail_lines: int | None) -> None:
    """A job run's captured stdout and stderr: the whole bounded log (its head, a line
    saying how much was dropped, its tail), or its last N lines."""
    ctx = _ctx()
    path = f"/api/v1/job-runs/{job_run_id}/log"
    with ctx.service(write=False) as client:
        offset = 0
        if tail_lines is not None:
            offset = _print_log_tail(client, path, tail_lines)
        while True:
            text, headers = client.text(path, {"offset": offset, "limit": LOG_PAGE_BYTES})
            sys.stdout.write(text)
            sys.stdout.flush()
            offset = int(headers.get("x-log-next-offset", offset))
            if headers.get("x-log-more") == "true":
                continue
            if not follow:
                return
            run = client.get(f"/api/v1/job-runs/{job_run_id}")
            if run["status"] not in ("queued", "running") and not text:
                return
            if not text:
                time.sleep(0.5)  # the log is a file the job writes; there is no event per line


LOG_PAGE_BYTES = 1 << 20  # the API's largest page


def _print_log_tail(client: Client, path: str, count: int) -> int:
    """Print the last ``count`` lines of the log at ``path``, reading back from its end in
    growing windows; return the offset its end had (where following goes on)."""
    _, headers = client.text(path, {"offset": 0, "limit": 1})
    size = int(headers.get("x-log-size", 0))
    window = 64 << 10
    while True:
        start = max(0, size - window)
        text = _read_log_range(client, path, start, size)
        lines = text.splitlines(keepends=True)
        # the window's first line may be cut: keep it only when the window is the whole log
        if len(lines) > count or start == 0:
            sys.stdout.write("".join(lines[-count:]))
            sys.stdout.flush()
            return size
        window *= 4


def _read_log_range(client: Client, path: str, start: int, end: int) -> str:
    parts: list[str] = []
    offset = start
    while offset < end:
        text, headers = client.text(
            path, {"offset": offset, "limit": min(LOG_PAGE_BYTES, end - offset)}
        )
        next_offset = int(headers.get("x-log-next-offset", offset))
        if next_offset <= offset:
            break
        parts.append(text)
        offset = next_offset
    return "".join(parts)


@cli.command()
@click.option(
    "--after", type=click.IntRange(0, None), default=0, help="events after this sequence number"
)
@click.option("--types", help="comma-separated event types")
@click.option("--partition", help="partition pattern, e.g. daily/date={date}")
@click.option("-f", "--follow", is_flag=True, help="keep following new events")
@click.option("--limit", type=click.IntRange(1, None), default=1000, show_default=True)
def events(after: int, types: str | None, partition: str | None, follow: bool, limit: int) -> None:
    """The Build Event Log."""
    ctx = _ctx()
    params: dict[str, Any] = {
        k: v for k, v in {"types": types, "partition": partition}.items() if v
    }
    shown = 0
    with ctx.service(write=False) as client:
        while True:
            page = client.get(
                "/api/v1/events",
                {**params, "after": after, "limit": min(1000, limit), "wait": 20 if follow else 0},
                timeout=60.0,
            )
            for event in page["events"]:
                if ctx.as_json:
                    sys.stdout.write(_json_line(event))
                else:
                    output.console.print(escape(output.event_line(event)))
                shown += 1
            sys.stdout.flush()
            after = int(page["last_sequence"])
            if not follow and (not page["events"] or shown >= limit):
                return


def _json_line(data: object) -> str:
    return json.dumps(data, separators=(",", ":")) + "\n"


def _merge_upstream_state(view: dict[str, Any], served: dict[str, Any]) -> None:
    """The service's follower state (connected, cursor, lag, ...) into the file's view."""
    by_name = {u.get("name"): u for u in served.get("upstreams", []) if isinstance(u, dict)}
    for up in view["upstreams"]:
        found = by_name.get(up["name"])
        if found is not None:
            up.update({k: v for k, v in found.items() if k not in ("url", "partitions")})


def _upstream_state(up: dict[str, Any]) -> str:
    if not up.get("following"):
        return "not followed: no `databuild serve` runs"
    state = "connected" if up.get("connected") else "UNREACHABLE"
    text = f"{state}, cursor {up.get('cursor', 0)}, lag {up.get('lag', 0)}"
    text += f", {up.get('forwarded_wants', 0)} want(s) forwarded"
    if up.get("last_error"):
        text += f", last error: {up['last_error']}"
    return text


@cli.command()
def upstreams() -> None:
    """The upstream graphs this graph follows, with their state: connected, cursor, lag,
    wants forwarded, last error (docs/federation.md)."""
    ctx = _ctx()
    config = ctx.config()
    view = graph_view(config.graph, config.digest).model_dump()
    with ctx.service(write=False) as client:
        _merge_upstream_state(view, client.get("/api/v1/graph"))
    if ctx.as_json:
        output.print_json({"upstreams": view["upstreams"]})
        return
    if not view["upstreams"]:
        output.console.print("no upstream graphs ([upstreams.NAME] in databuild.toml)")
    for up in view["upstreams"]:
        output.console.print(
            f"{escape(up['name'])} at {escape(up['url'])}: {escape(_upstream_state(up))}"
        )


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
)
def graph(fmt: str) -> None:
    """The graph: jobs, their output patterns, upstream graphs, and the job -> job edges
    observed in recorded missing inputs; exportable as a diagram."""
    ctx = _ctx()
    config = ctx.config()
    view = graph_view(config.graph, config.digest).model_dump()
    with ctx.service(write=False) as client:
        served = client.get("/api/v1/graph")
        url = client.base_url
    view["observed_edges"] = served.get("observed_edges", [])
    _merge_upstream_state(view, served)
    differs = served.get("config_digest", "") != config.digest
    if differs:
        output.err_console.print(
            f"[yellow]note:[/yellow] {escape(str(config.path))} differs from the configuration "
            f"the service at {escape(url)} runs ({escape(_differences(view, served))}); "
            "shown: the file. Apply it with `databuild reload` (or SIGHUP to the service)."
        )
    if ctx.as_json:
        view["service"] = {"url": url, "config_digest": served.get("config_digest", "")}
        view["service"]["differs_from_file"] = differs
        output.print_json(view)
    elif fmt == "mermaid":
        sys.stdout.write(_mermaid(view))
    elif fmt == "dot":
        sys.stdout.write(_dot(view))
    else:
        output.console.print(f"[bold]graph[/bold] {escape(view['name'])}")
        for job in view["jobs"]:
            output.console.print(
                f"  job {escape(job['name'])}: {escape(', '.join(job['outputs']))}  "
                f"[dim](batch {job['max_batch']}, concurrency {job['concurrency']}, retries {job['retries']}, "
                f"timeout {job['timeout_seconds']:.0f}s)[/dim]"
            )
        for up in view["upstreams"]:
            output.console.print(
                f"  upstream {escape(up['name'])} at {escape(up['url'])}: {escape(', '.join(up['partitions']))}"
                f"  [dim]({escape(_upstream_state(up))})[/dim]"
            )
        if view["observed_edges"]:
            output.console.print("[bold]observed[/bold] (from recorded missing inputs)")
        for edge in view["observed_edges"]:
            output.console.print(
                f"  job {escape(edge['job'])} needs {escape(_provider(edge))}  "
                f"[dim]({edge['count']}x, last {format_timestamp(edge['last_seen'])}, "
                f"e.g. {escape(edge['example_ref'])})[/dim]"
            )


def _provider(edge: dict[str, Any]) -> str:
    if edge["owner_kind"] == "none":
        return f"{edge['example_ref']} (no job or upstream matched it)"
    return f"{edge['pattern']} of {edge['owner_kind']} {edge['owner']}"


def _differences(file_view: dict[str, Any], served: dict[str, Any]) -> str:
    ours = {j["name"]: j for j in file_view["jobs"]}
    theirs = {j["name"]: j for j in served.get("jobs", [])}
    parts = [
        f"{label} {', '.join(sorted(names))}"
        for label, names in (
            ("the file adds job(s)", ours.keys() - theirs.keys()),
            ("removes job(s)", theirs.keys() - ours.keys()),
            ("changes job(s)", {n for n in ours.keys() & theirs.keys() if ours[n] != theirs[n]}),
        )
        if names
    ]
    return "; ".join(parts) or "other settings differ"


class _Nodes:
    """Diagram node ids for jobs and upstreams, made up for the ones only an observed edge
    names (a job removed from the file since)."""

    def __init__(self, view: dict[str, Any]) -> None:
        self.ids = {("job", j["name"]): f"job{i}" for i, j in enumerate(view["jobs"])}
        self.ids.update(
            {("upstream", u["name"]): f"up{i}" for i, u in enumerate(view["upstreams"])}
        )
        self.extra: list[tuple[str, str]] = []  # (node id, label)

    def of(self, kind: str, name: str, example: str = "") -> str:
        key = (kind, name or example)
        if key not in self.ids:
            node = f"seen{len(self.extra)}"
            self.ids[key] = node
            label = (
                f"{example} (no owner)" if kind == "none" else f"{kind} {name} (not in the file)"
            )
            self.extra.append((node, label))
        return self.ids[key]


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _mermaid(view: dict[str, Any]) -> str:
    lines = ["flowchart LR"]
    for index, job in enumerate(view["jobs"]):
        outputs = "<br/>".join(_mermaid_text(o) for o in job["outputs"])
        lines.append(f'    job{index}["job {job["name"]}"] --> out{index}(["{outputs}"])')
    for index, up in enumerate(view["upstreams"]):
        parts = "<br/>".join(_mermaid_text(p) for p in up["partitions"])
        lines.append(f'    up{index}{{{{"upstream {up["name"]}"}}}} --> upout{index}(["{parts}"])')
    nodes = _Nodes(view)
    edges = []
    for edge in view["observed_edges"]:
        source = nodes.of(edge["owner_kind"], edge["owner"], edge["example_ref"])
        target = nodes.of("job", edge["job"])
        label = _mermaid_text(
            f"observed {edge['count']}x: {edge['pattern'] or edge['example_ref']}"
        )
        edges.append(f'    {source} -. "{label}" .-> {target}')
    lines += [f'    {node}["{_mermaid_text(label)}"]' for node, label in nodes.extra]
    return "\n".join(lines + edges) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot(view: dict[str, Any]) -> str:
    lines = [f'digraph "{_dot_text(view["name"])}" {{', "  rankdir=LR;"]
    for index, job in enumerate(view["jobs"]):
        lines.append(f'  job{index} [shape=box,label="job {job["name"]}"];')
        for out_index, pattern in enumerate(job["outputs"]):
            lines.append(f'  out{index}_{out_index} [shape=ellipse,label="{_dot_text(pattern)}"];')
            lines.append(f"  job{index} -> out{index}_{out_index};")
    for index, up in enumerate(view["upstreams"]):
        lines.append(f'  up{index} [shape=hexagon,label="upstream {up["name"]}"];')
    nodes = _Nodes(view)
    edges = []
    for edge in view["observed_edges"]:
        source = nodes.of(edge["owner_kind"], edge["owner"], edge["example_ref"])
        target = nodes.of("job", edge["job"])
        label = _dot_text(f"observed {edge['count']}x: {edge['pattern'] or edge['example_ref']}")
        edges.append(f'  {source} -> {target} [style=dashed,label="{label}"];')
    lines += [
        f'  {node} [shape=box,style=dotted,label="{_dot_text(label)}"];'
        for node, label in nodes.extra
    ]
    lines += [*edges, "}"]
    return "\n".join(lines) + "\n"


@cli.command()
def reload() -> None:
    """Reload databuild.toml into the running service, as SIGHUP does: validated first; a
    bad file is refused and the service keeps its configuration."""
    ctx = _ctx()
    if not ctx.url or ctx.config_path:
        try:
            ctx.config()  # the service would refuse it too, with the same error
        except ConfigError as exc:
            raise ConfigError(
                exc.path,
                exc.key,
                f"{exc.problem}; reload refused: the service keeps running the configuration "
                "it loaded",
            ) from None
    with ctx.service(write=True) as client:
        result = client.post("/api/v1/reload", {})
    if ctx.as_json:
        output.print_json(result)
        return
    output.console.print(escape(result["summary"]))
    for want_id in result["wants_retried"]:
        output.console.print(f"  retried want {escape(want_id)}")


cli.add_command(sla)
cli.add_command(config)
cli.add_command(partition)


def main() -> None:
    cli(prog_name="databuild")


if __name__ == "__main__":
    main()
