"""``GET /metrics``: the graph's Prometheus metrics, in the text exposition format (0.0.4).

Called by Prometheus (or anyone) over HTTP; mounted by ``create_app``. Every figure is
gathered from the folded ``BuildState`` and the controller's counters *at scrape time*:
nothing is added to the reconcile path. A scrape is one pass over the wants and one over
the job runs (O(wants + runs), bounded by the state the service holds anyway); its result
is cached per Build Event Log sequence, so scrapes while nothing happens cost nothing.
The exposition is written here (no client library needed): few metrics, no registry.

Must not change state or touch the log.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from databuild.core.lifecycle import JobRunStatus, PartitionStatus
from databuild.core.model import WantStatus
from databuild.core.state import BuildState
from databuild.runtime.controller import ControllerStats
from databuild.service.host import GraphHost

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_OUTCOMES = (
    JobRunStatus.SUCCEEDED,
    JobRunStatus.FAILED,
    JobRunStatus.MISSING_DEPS,
    JobRunStatus.CANCELED,
)

router = APIRouter()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    """One metric family: a name, a type, help, and its samples."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((self.name + suffix, labels, value))

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for name, labels, value in self.samples:
            shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(
                f"{name}{{{shown}}} {_number(value)}" if shown else f"{name} {_number(value)}"
            )
        return "\n".join(lines) + "\n"


def _histogram(family: Family, values: Sequence[float], **labels: str) -> None:
    ordered = sorted(values)
    index = 0
    for bound in DURATION_BUCKETS:
        while index < len(ordered) and ordered[index] <= bound:
            index += 1
        family.add(index, "_bucket", **labels, le=_number(bound))
    family.add(len(ordered), "_bucket", **labels, le="+Inf")
    family.add(sum(ordered), "_sum", **labels)
    family.add(len(ordered), "_count", **labels)


def _queue_depth(state: BuildState, now: float) -> Counter[str]:
    """Ready partitions per job: waiting for a run slot (deduplicated; stale entries skipped)."""
    depth: Counter[str] = Counter()
    for job_name, queue in state.ready.items():
        refs = set()
        for *_, ref in queue:
            part = state.partitions.get(ref)
            if part is None or not part.active_wants:
                continue
            if part.status is PartitionStatus.ABSENT or (
                part.status is PartitionStatus.BACKOFF and part.retry_at <= now
            ):
                refs.add(ref)
        depth[job_name] = len(refs)
    return depth


def state_families(state: BuildState, now: float) -> list[Family]:
    """The metrics the folded state answers (the scan; cached by the caller)."""
    wants = Family("databuild_wants", "gauge", "Wants by status.")
    by_status = Counter(record.status for record in state.wants.values())
    for status in WantStatus:
        wants.add(by_status.get(status, 0), status=status.value)

    runs = Family("databuild_job_runs_total", "counter", "Finished job runs by job and outcome.")
    in_flight = Family("databuild_job_runs_in_flight", "gauge", "Job runs queued or running.")
    durations = Family(
        "databuild_job_run_duration_seconds",
        "histogram",
        "Duration of finished job runs (start to finish), by job.",
    )
    outcome_counts: Counter[tuple[str, JobRunStatus]] = Counter()
    flying: Counter[str] = Counter()
    per_job: dict[str, list[float]] = {job.name: [] for job in state.graph.jobs}
    for run in state.runs.values():
        if run.status.terminal:
            outcome_counts[(run.job_name, run.status)] += 1
            if run.status is not JobRunStatus.CANCELED and run.started_at:
                per_job.setdefault(run.job_name, []).append(run.duration_seconds)
        else:
            flying[run.job_name] += 1
    for job in state.graph.jobs:
        for outcome in _OUTCOMES:
            runs.add(
                outcome_counts.get((job.name, outcome), 0), job=job.name, outcome=outcome.value
            )
        in_flight.add(flying.get(job.name, 0), job=job.name)
    for job_name, values in sorted(per_job.items()):
        _histogram(durations, values, job=job_name)

    queue = Family(
        "databuild_ready_partitions", "gauge", "Queue depth: partitions ready to build, by job."
    )
    depth = _queue_depth(state, now)
    for job in state.graph.jobs:
        queue.add(depth.get(job.name, 0), job=job.name)

    violations = Family(
        "databuild_sla_violations_total", "counter", "Wants that missed their SLA deadline."
    )
    violations.add(len(state.sla_violations))
    bel = Family("databuild_bel_last_sequence", "gauge", "Sequence of the newest BEL event.")
    bel.add(state.last_sequence)
    return [wants, runs, in_flight, durations, queue, violations, bel]


def controller_families(stats: ControllerStats) -> list[Family]:
    steps = Family(
        "databuild_reconcile_step_seconds",
        "summary",
        "Time per reconcile step (decide, append to the BEL, act).",
    )
    steps.add(stats.step_seconds_total, "_sum")
    steps.add(stats.steps, "_count")
    last = Family(
        "databuild_reconcile_last_step_seconds", "gauge", "Duration of the latest reconcile step."
    )
    last.add(stats.last_step_seconds)
    appended = Family(
        "databuild_events_appended_total", "counter", "Events this process appended to the BEL."
    )
    appended.add(stats.events)
    started = Family(
        "databuild_job_runs_started_total", "counter", "Job runs this process started."
    )
    started.add(stats.started_runs)
    return [steps, last, appended, started]


def render(families: Iterable[Family]) -> str:
    return "".join(f.render() for f in families)


class MetricsCache:
    """The state scan, redone only when the log has moved (or the queue's time has)."""

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._text = ""

    def state_text(self, state: BuildState, now: float) -> str:
        key = (state.last_sequence, int(now))  # retry back-offs make partitions ready with time
        if key != self._key:
            self._text = render(state_families(state, now))
            self._key = key
        return self._text


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=True)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics (text exposition format 0.0.4)."""
    host: GraphHost = request.app.state.host
    cache: MetricsCache | None = getattr(request.app.state, "metrics_cache", None)
    if cache is None:
        cache = request.app.state.metrics_cache = MetricsCache()
    text = cache.state_text(host.state, host.clock.now())
    up = Family("databuild_up", "gauge", "1 while the controller works, 0 once it stopped.")
    controller = host.controller
    up.add(
        0 if controller is not None and controller.failure is not None else 1,
        graph=host.config.name,
    )
    text += up.render()
    if controller is not None:  # storage faults (issue 14): 0 while an append is retried
        storage = Family("databuild_storage_up", "gauge", "0 while the BEL is unavailable.")
        storage.add(0 if controller.storage_down or controller.failure else 1)
        retries = Family(
            "databuild_storage_retries_total", "counter", "Appends retried after a fault."
        )
        retries.add(controller.stats.storage_retries)
        text += storage.render() + retries.render()
    if controller is not None:
        text += render(controller_families(controller.stats))
    return PlainTextResponse(text, media_type=CONTENT_TYPE)
