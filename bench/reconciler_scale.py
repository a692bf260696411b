"""Benchmark 4: the reconciler at scale, and the service's start time from a large BEL.

Event cost (pure core, in process, no I/O). A graph with job ``d`` building ``d/{i}`` and
an upstream graph providing ``u/{i}``. N root wants for ``d/0 .. d/N-1`` are dispatched,
and each run reports its partitions missing ``u/{i mod N/10}``: every ``d`` partition now
WAITs on an upstream partition (10 wants per upstream partition; the derived wants for the
``u`` partitions wait on the upstream graph). Then, one at a time, an upstream partition
becomes live and we time what the controller does for it:
``partition_live_upstream`` + ``tick`` (which dispatches the 10 woken partitions as one
run) + ``take``. N = 10k, 50k, 100k with the fan-out held at 10 shows whether the cost
follows the event's work or the number of wants.

Service start. A SQLite BEL of M realistic events is made by driving the real Reconciler
through a calendar-like build (``daily/day={i}`` wants whose runs discover ``raw/day={i}``,
batches of 64, appended in steps of up to 50k events), then a fresh process times what
``GraphHost.start`` does: ``open_log``, then ``Controller.start`` (read the log in 50k
chunks, fold into BuildState, recover, first step) with a fake executor. A read-only pass
(decode, no fold) splits reading from folding.

Run alone: ``.venv/bin/python -m bench.reconciler_scale [--wants 10000 50000 100000]
[--bel-events 1000000] [--ten-million] [--keep DIR]``.

``--keep DIR`` keeps each generated BEL (``DIR/bel-<M>.sqlite``, what made it in
``DIR/bel-<M>.json``) and its snapshot (``DIR/bel-<M>-snapshots/``) and reuses them when they are
already there, so the start can be measured again without generating the log anew (4-6
minutes at 10M). A kept snapshot the current code cannot use (another snapshot FORMAT) is
rebuilt first by folding the kept log up to the same sequence, so a reused run measures the
same start: that snapshot, plus the same tail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import pickle
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, header, summary_ms, write_result
from databuild.core.events import MissingDeps
from databuild.core.model import GraphSpec, JobSpec, UpstreamSpec, WantRequest, WantSource
from databuild.core.outcomes import (
    RunFinishedReport,
    RunMissingDeps,
    RunStartedReport,
    RunSucceeded,
)
from databuild.core.reconcile import Reconciler, StartRun
from databuild.core.refs import PartitionPattern, PartitionRef
from databuild.runtime.controller import SNAPSHOT_EVERY  # the service's interval

NOW = 1_700_000_000.0
FANOUT = 10


# ---- event cost ------------------------------------------------------------------------
def scale_graph() -> GraphSpec:
    return GraphSpec(
        name="scale",
        jobs=(
            JobSpec(
                "d",
                (PartitionPattern.compile("d/{i}"),),
                ("true",),
                max_batch=1000,
                concurrency=10_000_000,
            ),
        ),
        upstreams=(UpstreamSpec("up", "http://127.0.0.1:9", (PartitionPattern.compile("u/{i}"),)),),
    )


def waiting_reconciler(wants: int) -> tuple[Reconciler, int]:
    """A reconciler with ``wants`` d-partitions all WAITING on ``wants // FANOUT`` upstream
    partitions; returns it and the number of upstream partitions."""
    upstream = wants // FANOUT
    rec = Reconciler(scale_graph())
    for i in range(wants):
        rec.request_want(WantRequest(PartitionRef(f"d/{i}"), int(NOW), WantSource.API), NOW)
    rec.take()
    while True:
        rec.tick(NOW, 1_000_000)
        _, effects = rec.take()
        starts = [e for e in effects if isinstance(e, StartRun)]
        if not starts:
            break
        for start in starts:
            rec.run_started(RunStartedReport(start.job_run_id, 1), NOW)
            missing = tuple(
                MissingDeps(ref, (PartitionRef(f"u/{int(ref[2:]) % upstream}"),))
                for ref in start.partition_refs
            )
            rec.run_finished(RunFinishedReport(start.job_run_id, RunMissingDeps(missing, 0.1)), NOW)
        rec.take()
    return rec, upstream


def event_cost(wants: int, samples: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    rec, upstream = waiting_reconciler(wants)
    setup = time.perf_counter() - t0
    active = sum(1 for w in rec.state.wants.values() if w.active)
    waiting = sum(1 for p in rec.state.partitions.values() if p.status.value == "waiting")
    order = random.Random(7).sample(range(upstream), min(samples, upstream))
    timings: list[float] = []
    emitted = 0
    now = NOW
    for k in order:
        now += 0.001
        started = time.perf_counter()
        rec.partition_live_upstream(PartitionRef(f"u/{k}"), "up", now)
        rec.tick(now, 1)
        events, _ = rec.take()
        timings.append(time.perf_counter() - started)
        emitted += len(events)
    figures = {
        "wants": wants,
        "active_wants": active,
        "waiting_partitions": waiting,
        "upstream_partitions": upstream,
        "setup_seconds": round(setup, 2),
        "events_emitted_per_input": round(emitted / len(order), 1),
        **summary_ms(timings),
    }
    print(
        f"   one partition-live event, {active:>7,} active wants ({waiting:,} waiting): "
        f"mean {figures['mean_ms']:.3f} ms, p50 {figures['p50_ms']:.3f} ms, "
        f"p99 {figures['p99_ms']:.3f} ms ({figures['events_emitted_per_input']} events each)"
    )
    return figures


# ---- a large BEL, and the service start ---------------------------------------------------
def calendar_graph() -> GraphSpec:
    return GraphSpec(
        name="startbench",
        jobs=(
            JobSpec(
                "ingest",
                (PartitionPattern.compile("raw/day={i}"),),
                ("true",),
                max_batch=64,
                concurrency=1_000_000,
            ),
            JobSpec(
                "clean",
                (PartitionPattern.compile("daily/day={i}"),),
                ("true",),
                max_batch=64,
                concurrency=1_000_000,
            ),
        ),
    )


def generate_bel(
    path: Path, events: int, snapshot_at: int | None = None, snapshot_only: bool = False
) -> dict[str, Any]:
    """Drive the reconciler through a calendar-like build until the log holds ``events``.

    With ``snapshot_at``, write a state snapshot (as the service's periodic snapshot would)
    once the log first holds that many events: a restart then folds only the rest.
    ``snapshot_only``: the build is deterministic, so driving it again without writing the
    log, up to the snapshot, writes the very snapshot a kept log was generated with."""
    from databuild.core.state import FLUSH_AT, BuildState
    from databuild.log import SqliteEventLog
    from databuild.runtime.history import FILE_NAME, SqliteHistory
    from databuild.runtime.snapshots import SnapshotStore

    snapshot_sequence = 0

    t0 = time.perf_counter()
    # finished records go to the history store beside the snapshots, as the service's do
    history_file = snapshot_dir(path) / FILE_NAME
    for stale in (history_file, Path(f"{history_file}-wal"), Path(f"{history_file}-shm")):
        stale.unlink(missing_ok=True)
    history = SqliteHistory(history_file)
    rec = Reconciler(calendar_graph(), BuildState(calendar_graph(), history))
    written = 0
    day = 0
    now = NOW
    if snapshot_only:
        assert snapshot_at is not None
        events = snapshot_at
    with contextlib.nullcontext() if snapshot_only else SqliteEventLog(path) as log:

        def flush() -> list[Any]:
            nonlocal written
            batch, effects = rec.take()
            nonlocal snapshot_sequence
            for start in range(0, len(batch), 50_000):
                if log is not None:
                    log.append([e.payload for e in batch[start : start + 50_000]], now)
            written += len(batch)
            taking = snapshot_at is not None and not snapshot_sequence and written >= snapshot_at
            if taking:
                rec.state.flush_for_snapshot()
            elif rec.state.pending_records() >= FLUSH_AT:
                rec.state.flush_history()
            if taking:
                SnapshotStore(snapshot_dir(path), calendar_graph()).write(rec.state)
                snapshot_sequence = rec.state.last_sequence
            return list(effects)

        while written < events:
            for _ in range(640):
                rec.request_want(
                    WantRequest(PartitionRef(f"daily/day={day}"), int(NOW), WantSource.API), now
                )
                day += 1
            while True:
                now += 0.01
                rec.tick(now, 1_000_000)
                effects = flush()
                starts = [e for e in effects if isinstance(e, StartRun)]
                if not starts:
                    break
                for start in starts:
                    rec.run_started(RunStartedReport(start.job_run_id, 4242), now)
                for start in starts:
                    refs = start.partition_refs
                    if start.job_name == "clean" and not rec.state.is_live(
                        PartitionRef("raw/" + refs[0].split("/", 1)[1])
                    ):
                        missing = tuple(
                            MissingDeps(r, (PartitionRef("raw/" + r.split("/", 1)[1]),))
                            for r in refs
                        )
                        outcome: Any = RunMissingDeps(missing, 0.05)
                    else:
                        outcome = RunSucceeded(0.05)
                    rec.run_finished(RunFinishedReport(start.job_run_id, outcome), now)
                flush()
    rec.state.flush_history()
    history.close()
    return {
        "events": written,
        "days": day,
        "wants": len(rec.state.wants),
        "partitions": len(rec.state.partitions),
        "runs": len(rec.state.runs),
        "generate_seconds": round(time.perf_counter() - t0, 1),
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "snapshot_sequence": snapshot_sequence,
    }


def snapshot_dir(path: Path) -> Path:
    """Where the snapshots of the BEL at ``path`` go: one directory per BEL (kept BELs of
    several sizes share a folder, and a snapshot of one must not be tried on another)."""
    return path.with_name(f"{path.stem}-snapshots")


def measure_start(path: Path, with_snapshot: bool = False) -> dict[str, Any]:
    """In this (fresh) process: what GraphHost.start does, timed; then a read-only pass.
    ``with_snapshot``: start as the service does, from the newest snapshot plus the tail."""
    from databuild.executors.fake import FakeExecutor
    from databuild.log import open_log
    from databuild.runtime.controller import Controller
    from databuild.runtime.snapshots import SnapshotStore

    if with_snapshot:
        log = open_log(f"sqlite:///{path}")
        store = SnapshotStore(snapshot_dir(path), calendar_graph())
        snap_controller = Controller(
            calendar_graph(),
            log,
            FakeExecutor(),
            root_dir=path.parent,
            runs_dir=path.parent / "runs",
            snapshots=store,
        )

        async def snap_start() -> None:
            await snap_controller.start()

        t0 = time.perf_counter()
        asyncio.run(snap_start())
        elapsed = time.perf_counter() - t0
        return {
            "events_folded": snap_controller.state.last_sequence,
            "from_snapshot_at": snap_controller.loaded_from_snapshot,
            "start_seconds": round(elapsed, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        }

    t0 = time.perf_counter()
    log = open_log(f"sqlite:///{path}")
    opened = time.perf_counter() - t0
    controller = Controller(
        calendar_graph(), log, FakeExecutor(), root_dir=path.parent, runs_dir=path.parent / "runs"
    )

    async def start() -> None:
        await controller.start()
        await controller.stop()

    t1 = time.perf_counter()
    asyncio.run(start())
    started = time.perf_counter() - t1
    folded = controller.state.last_sequence
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.close()
    controller.reconciler = None  # type: ignore[assignment]  # free the state
    gc.collect()
    with open_log(f"sqlite:///{path}") as reader:
        t2 = time.perf_counter()
        after, count = 0, 0
        while True:
            chunk = reader.read(after, 50_000)
            if not chunk:
                break
            count += len(chunk)
            after = chunk[-1].sequence
        read_only = time.perf_counter() - t2
    return {
        "events_folded": folded,
        "open_seconds": round(opened, 3),
        "start_seconds": round(opened + started, 2),
        "read_decode_seconds": round(read_only, 2),
        "fold_and_rest_seconds": round(started - read_only, 2),
        "peak_rss_mb": round(rss_mb, 0),
    }


def _usable_snapshot(path: Path, sequence: int) -> bool:
    """Whether ``path``'s snapshot directory holds a snapshot at ``sequence`` that this code
    can load (its header names the current FORMAT and this graph)."""
    from databuild.runtime.history import FILE_NAME
    from databuild.runtime.snapshots import FORMAT, graph_fingerprint

    fingerprint = graph_fingerprint(calendar_graph())
    file = snapshot_dir(path) / f"state-{fingerprint}-{sequence:012d}.pickle"
    if not (snapshot_dir(path) / FILE_NAME).exists():
        return False
    try:
        with file.open("rb") as handle:
            return bool(pickle.load(handle) == (FORMAT, fingerprint))
    except (OSError, pickle.UnpicklingError, EOFError):
        return False


def rebuild_snapshot(path: Path, made: dict[str, Any]) -> float:
    """Write again, in the current FORMAT, the snapshot the kept log at ``path`` was
    generated with (``made``: what ``generate_bel`` returned). Not by folding the log: the
    service snapshots its live state, whose ready queues the dispatcher has kept short,
    while a fold keeps every entry it ever queued (a restart's first step then pops them
    all), so the build is driven again instead. Returns the seconds it took."""
    t0 = time.perf_counter()
    again = generate_bel(path, made["events"], made["snapshot_sequence"], snapshot_only=True)
    if again["snapshot_sequence"] != made["snapshot_sequence"]:
        raise RuntimeError(f"the build did not repeat itself: {again} vs {made}")
    return time.perf_counter() - t0


def kept_or_generated_bel(path: Path, events: int, keep: bool) -> dict[str, Any]:
    """Generate the BEL at ``path`` (with a snapshot SNAPSHOT_EVERY events before its end),
    or with ``keep``, reuse the one a previous run kept there."""
    meta = path.with_suffix(".json")
    if keep and path.exists() and meta.exists():
        made: dict[str, Any] = json.loads(meta.read_text())
        print(f"   reusing the BEL of {made['events']:,} events kept at {path}")
        sequence = made["snapshot_sequence"]
        target = max(0, made["events"] - SNAPSHOT_EVERY)
        if made.get("snapshot_at", made["events"] - 200_000) != target:
            # the service's interval changed since: its worst case is another snapshot
            shutil.rmtree(snapshot_dir(path), ignore_errors=True)
            t0 = time.perf_counter()
            again = generate_bel(path, made["events"], target, snapshot_only=True)
            made.update(snapshot_at=target, snapshot_sequence=again["snapshot_sequence"])
            meta.write_text(json.dumps(made))
            print(
                f"   wrote its snapshot at {made['snapshot_sequence']:,} (the service's interval "
                f"is now {SNAPSHOT_EVERY:,}) in {time.perf_counter() - t0:.0f} s"
            )
            return made
        if sequence and not _usable_snapshot(path, sequence):
            seconds = rebuild_snapshot(path, made)
            print(f"   rebuilt its snapshot at {sequence:,} (current format) in {seconds:.0f} s")
        return made
    # the service snapshots every SNAPSHOT_EVERY events: the worst case loads one and folds
    # that many events after it
    made = generate_bel(path, events, snapshot_at=max(0, events - SNAPSHOT_EVERY))
    made["snapshot_at"] = max(0, events - SNAPSHOT_EVERY)
    print(
        f"   generated a BEL of {made['events']:,} events ({made['days']:,} days, "
        f"{made['file_mb']} MB) in {made['generate_seconds']} s"
    )
    if keep:
        meta.write_text(json.dumps(made))
    return made


def service_start(
    events: int, tmp: Path, full_replay: bool = True, keep: bool = False
) -> dict[str, Any]:
    path = tmp / f"bel-{events}.sqlite"
    made = kept_or_generated_bel(path, events, keep)
    snap_child = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.reconciler_scale",
            "--measure-start",
            str(path),
            "--with-snapshot",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    snap = json.loads(snap_child.stdout.strip().splitlines()[-1])
    print(
        f"   service start with {snap['events_folded']:,} events, from a snapshot at "
        f"{snap['from_snapshot_at']:,}: {snap['start_seconds']} s, peak RSS {snap['peak_rss_mb']:.0f} MB"
    )
    start: dict[str, Any] = {}
    if full_replay:
        child = subprocess.run(
            [sys.executable, "-m", "bench.reconciler_scale", "--measure-start", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        start = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"   service start with {start['events_folded']:,} events, no snapshot (full replay): "
            f"{start['start_seconds']} s (read+decode {start['read_decode_seconds']} s, fold+rest "
            f"{start['fold_and_rest_seconds']} s), peak RSS {start['peak_rss_mb']:.0f} MB"
        )
    if not keep:
        path.unlink()
    return {"bel": made, **start, "with_snapshot": snap}


def run(
    wants: tuple[int, ...], samples: int, bel_sizes: tuple[int, ...], keep: Path | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"event_cost": {str(n): event_cost(n, samples) for n in wants}}
    gc.collect()
    with contextlib.ExitStack() as stack:
        if keep is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-bel-")))
        else:
            tmp = keep
            tmp.mkdir(parents=True, exist_ok=True)
        # a full replay of 10M events takes minutes: measured only up to 1M
        out["service_start"] = {
            str(m): service_start(m, tmp, full_replay=m <= 1_000_000, keep=keep is not None)
            for m in bel_sizes
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="reconciler scale and service start")
    parser.add_argument("--wants", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--samples", type=int, default=2000, help="events timed per size")
    parser.add_argument("--bel-events", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--ten-million", action="store_true", help="also a 10M-event BEL")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the generated BEL and snapshot in DIR; reuse them if already there",
    )
    parser.add_argument("--measure-start", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--with-snapshot", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_start:
        print(json.dumps(measure_start(args.measure_start, args.with_snapshot)))
        return 0
    info = header("reconciler scale / service start")
    sizes = tuple(args.bel_events) + ((10_000_000,) if args.ten_million else ())
    result = run(tuple(args.wants), args.samples, sizes, args.keep)
    write_result("reconciler_scale", result, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
