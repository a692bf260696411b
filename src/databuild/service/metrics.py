"""``GET /metrics``: the graph's Prometheus metrics, through ``prometheus_client``.

Called by Prometheus (or anyone) over HTTP; mounted by ``create_app``. Every graph figure is
gathered from the folded ``BuildState`` and the controller's counters *at scrape time* by a
custom collector (``GraphCollector``): nothing is added to the reconcile path. A scrape is
one pass over the wants and one over the job runs (O(wants + runs), bounded by the state the
service holds anyway); its result is cached per Build Event Log sequence, so scrapes while
nothing happens cost nothing. The registry also holds the library's process, platform and
garbage-collector collectors (``process_*``, ``python_*``), which dashboards expect. Each
app has its own registry: several services in one process (tests) do not mix figures.

Must not change state or touch the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    GC_COLLECTOR,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from databuild.core.externals import waiting_refs
from databuild.core.lifecycle import JobRunStatus, PartitionStatus
from databuild.core.model import ExternalSpec, WantStatus
from databuild.core.state import DURATION_BUCKETS, BuildState, RunStats
from databuild.runtime.controller import ControllerStats
from databuild.runtime.externals import ExternalCheckStats
from databuild.service.host import GraphHost

# The classic text format: every name here is a legacy Prometheus name, so 0.0.4 is exact.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_OUTCOMES = (
    JobRunStatus.SUCCEEDED,
    JobRunStatus.FAILED,
    JobRunStatus.MISSING_DEPS,
    JobRunStatus.CANCELED,
)

router = APIRouter()


def _histogram(family: HistogramMetricFamily, stats: RunStats, labels: list[str]) -> None:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip(DURATION_BUCKETS, stats.buckets, strict=True):
        cumulative += count
        buckets.append((f"{bound:g}", cumulative))
    buckets.append(("+Inf", stats.duration_count))
    family.add_metric(labels, buckets, stats.duration_sum)


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


def state_families(state: BuildState, now: float) -> list[Metric]:
    """The metrics the folded state answers (the scan; cached by the caller)."""
    wants = GaugeMetricFamily("databuild_wants", "Wants by status.", labels=["status"])
    for status in WantStatus:
        wants.add_metric([status.value], state.want_counts.get(status, 0))

    runs = CounterMetricFamily(
        "databuild_job_runs_total",
        "Finished job runs by job and outcome.",
        labels=["job", "outcome"],
    )
    in_flight = GaugeMetricFamily(
        "databuild_job_runs_in_flight", "Job runs queued or running.", labels=["job"]
    )
    durations = HistogramMetricFamily(
        "databuild_job_run_duration_seconds",
        "Duration of finished job runs (start to finish), by job.",
        labels=["job"],
    )
    no_runs = RunStats()
    for job in state.graph.jobs:
        stats = state.run_stats.get(job.name, no_runs)
        for outcome in _OUTCOMES:
            runs.add_metric([job.name, outcome.value], stats.outcomes.get(outcome, 0))
        in_flight.add_metric([job.name], len(state.running_by_job.get(job.name, ())))
    names = {job.name for job in state.graph.jobs} | set(state.run_stats)
    for job_name in sorted(names):
        _histogram(durations, state.run_stats.get(job_name, no_runs), [job_name])

    queue = GaugeMetricFamily(
        "databuild_ready_partitions",
        "Queue depth: partitions ready to build, by job.",
        labels=["job"],
    )
    depth = _queue_depth(state, now)
    for job in state.graph.jobs:
        queue.add_metric([job.name], depth.get(job.name, 0))

    violations = CounterMetricFamily(
        "databuild_sla_violations_total",
        "Wants that missed their SLA deadline.",
        value=len(state.sla_violations),
    )
    bel = GaugeMetricFamily(
        "databuild_bel_last_sequence", "Sequence of the newest BEL event.", state.last_sequence
    )
    return [wants, runs, in_flight, durations, queue, violations, bel]


def controller_families(stats: ControllerStats) -> list[Metric]:
    steps = SummaryMetricFamily(
        "databuild_reconcile_step_seconds",
        "Time per reconcile step (decide, append to the BEL, act).",
        count_value=stats.steps,
        sum_value=stats.step_seconds_total,
    )
    last = GaugeMetricFamily(
        "databuild_reconcile_last_step_seconds",
        "Duration of the latest reconcile step.",
        stats.last_step_seconds,
    )
    appended = CounterMetricFamily(
        "databuild_events_appended_total",
        "Events this process appended to the BEL.",
        value=stats.events,
    )
    started = CounterMetricFamily(
        "databuild_job_runs_started_total",
        "Job runs this process started.",
        value=stats.started_runs,
    )
    return [steps, last, appended, started]


def external_families(
    state: BuildState, externals: Sequence[ExternalSpec], checks: dict[str, ExternalCheckStats]
) -> list[Metric]:
    """Per external: refs some want waits on, and its check command's runs and failures."""
    waiting = GaugeMetricFamily(
        "databuild_external_refs_waiting",
        "External partitions some active want waits on, not yet live.",
        labels=["external"],
    )
    runs = CounterMetricFamily(
        "databuild_external_checks_total",
        "Runs of an external's check command.",
        labels=["external"],
    )
    failures = CounterMetricFamily(
        "databuild_external_check_failures_total",
        "Runs of an external's check command that failed (exit code, timeout, output).",
        labels=["external"],
    )
    found = CounterMetricFamily(
        "databuild_external_refs_found_total",
        "External partitions an external's check command found and made live.",
        labels=["external"],
    )
    for external in externals:
        waiting.add_metric([external.name], len(waiting_refs(state, external.name)))
        stats = checks.get(external.name)
        if stats is not None:
            runs.add_metric([external.name], stats.checks)
            failures.add_metric([external.name], stats.failures)
            found.add_metric([external.name], stats.found)
    return [waiting, runs, failures, found]


class GraphCollector(Collector):
    """The graph's metrics, read from the host at each scrape. The state scan is redone
    only when the log has moved (or the queue's time has: retry back-offs make partitions
    ready with time)."""

    def __init__(self, host: GraphHost) -> None:
        self.host = host
        self._key: tuple[int, int] | None = None
        self._state: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        host = self.host
        state = host.state
        now = host.clock.now()
        key = (state.last_sequence, int(now))
        if key != self._key:
            self._state = state_families(state, now)
            self._key = key
        yield from self._state
        controller = host.controller
        up = GaugeMetricFamily(
            "databuild_up", "1 while the controller works, 0 once it stopped.", labels=["graph"]
        )
        stopped = controller is not None and controller.failure is not None
        up.add_metric([host.config.name], 0 if stopped else 1)
        yield up
        yield GaugeMetricFamily(
            "databuild_event_stream_subscriptions",
            "Clients following GET /api/v1/events/stream now.",
            host.stream_subscriptions,
        )
        if controller is not None:  # storage faults (issue 14): 0 while an append is retried
            yield GaugeMetricFamily(
                "databuild_storage_up",
                "0 while the BEL is unavailable.",
                0 if controller.storage_down or controller.failure else 1,
            )
            yield CounterMetricFamily(
                "databuild_storage_retries_total",
                "Appends retried after a fault.",
                value=controller.stats.storage_retries,
            )
            yield from controller_families(controller.stats)
        if host.config.externals:
            checker = host.external_checker
            checks = checker.stats if checker is not None else {}
            yield from external_families(state, host.config.externals, checks)
        if host.followers:
            yield from upstream_families(host)


def upstream_families(host: GraphHost) -> Iterator[Metric]:
    """Per upstream graph followed (issue 9): connected, lag, reconnects, relists."""
    connected = GaugeMetricFamily(
        "databuild_upstream_connected",
        "1 while the upstream graph's event stream is followed, 0 while unreachable.",
        labels=["upstream"],
    )
    lag = GaugeMetricFamily(
        "databuild_upstream_lag_events",
        "Upstream events not yet read by this graph (as last seen).",
        labels=["upstream"],
    )
    reconnects = CounterMetricFamily(
        "databuild_upstream_reconnects", "Reconnects to the upstream graph.", labels=["upstream"]
    )
    relists = CounterMetricFamily(
        "databuild_upstream_relists",
        "Relists after a gap that could not be resumed.",
        labels=["upstream"],
    )
    for name, follower in sorted(host.followers.items()):
        status = follower.status
        connected.add_metric([name], 1 if status.connected else 0)
        lag.add_metric([name], status.lag)
        reconnects.add_metric([name], status.reconnects)
        relists.add_metric([name], status.relists)
    yield from (connected, lag, reconnects, relists)


def registry_for(host: GraphHost) -> CollectorRegistry:
    """A registry of this host's graph metrics plus the process, platform and GC ones."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GraphCollector(host))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if GC_COLLECTOR is not None:
        GCCollector(registry=registry)
    return registry


def render(families: Iterable[Metric]) -> str:
    """The exposition text of some families (docs and tests)."""
    registry = CollectorRegistry(auto_describe=False)

    class _Fixed(Collector):
        def collect(self) -> Iterator[Metric]:
            yield from families

    registry.register(_Fixed())
    return generate_latest(registry).decode()


@router.get("/metrics", response_class=Response, include_in_schema=True)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format 0.0.4)."""
    host: GraphHost = request.app.state.host
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    if registry is None or getattr(request.app.state, "metrics_host", None) is not host:
        registry = request.app.state.metrics_registry = registry_for(host)
        request.app.state.metrics_host = host
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
