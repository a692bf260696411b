"""Variants of the calendar example for the peer benchmark: batched or not, warm or cold
Python jobs, shell jobs, with or without input hints.

Input hints (``inputs`` in ``databuild.toml``, docs/config.md#input-hints): the example hints
``clean``'s input (``raw/date={date}``) and ``weekly``'s seven days
(``daily/date={week|iso_week_days}``); the summary reads every day of a range its
environment sets, which no hint names, and discovers them. The ``*_hints`` variants keep
those hints; the others remove them, so that they measure discovery alone, as the figures
before hints did.

``make(parent, variant)`` copies ``examples/calendar`` into ``parent`` and rewrites its
``databuild.toml`` (and, for the shell variant, its jobs) so that one build of
``summary/all`` exercises the configuration the variant names. The job bodies stay trivial
(the Python variants are the example's own jobs; the shell variant writes a small file per
partition and finds its inputs by looking for their files), so the figures measure the
orchestrator. Used by ``bench.peer``; it measures nothing itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench import cold_build


@dataclass(frozen=True)
class Variant:
    name: str
    unbatched: bool = False  # every job max_batch = 1
    cold: bool = False  # warm = false: a new Python process per run
    shell: bool = False  # sh jobs instead of the Python ones (implies unbatched, cold)
    hints: bool = False  # keep the input hints (HINTS); without, every job discovers

    @property
    def describe(self) -> str:
        kind = "sh jobs" if self.shell else ("cold Python" if self.cold else "warm Python")
        batch = "max_batch 1" if self.unbatched or self.shell else "batched"
        return f"{batch}, {kind}" + (", input hints" if self.hints else "")


VARIANTS = {
    v.name: v
    for v in (
        Variant("batched_warm"),
        Variant("unbatched_warm", unbatched=True),
        Variant("unbatched_cold", unbatched=True, cold=True),
        Variant("shell", unbatched=True, shell=True),
        Variant("batched_warm_hints", hints=True),
        Variant("unbatched_warm_hints", unbatched=True, hints=True),
        Variant("unbatched_cold_hints", unbatched=True, cold=True, hints=True),
    )
}

# The input hints the *_hints variants give, per job: the inputs each run reads, as patterns
# over its output's fields (only clean's can be written so).
HINTS = {"clean": ("raw/date={date}",), "weekly": ("daily/date={week|iso_week_days}",)}
_HINT_BLOCK = re.compile(r"(?ms)^# Input hints:.*?^inputs = [^\n]*\n|^inputs = [^\n]*\n")

INGEST_SH = """\
for ref in "$@"; do
  f="data/$ref.json"; mkdir -p "${f%/*}"; printf '{"ref": "%s"}\\n' "$ref" > "$f"
done
"""

CLEAN_SH = """\
for ref in "$@"; do
  d="${ref#daily/date=}"
  if [ -e "data/raw/date=$d.json" ]; then
    f="data/$ref.json"; mkdir -p "${f%/*}"; printf '{"ref": "%s"}\\n' "$ref" > "$f"
  else
    printf '{"missing": {"%s": ["raw/date=%s"]}}\\n' "$ref" "$d" >> "$DATABUILD_RESULT_PATH"
  fi
done
"""

WEEKLY_SH = """\
for ref in "$@"; do
  w="${ref#weekly/week=}"; y="${w%-W*}"; n="${w#*-W}"; n="${n#0}"
  dow=$(date -u -d "$y-01-04" +%u)
  missing=""
  for i in 0 1 2 3 4 5 6; do
    d=$(date -u -d "$y-01-04 -$((dow - 1)) days +$(( (n - 1) * 7 + i )) days" +%F)
    [ -e "data/daily/date=$d.json" ] || missing="$missing${missing:+, }\\"daily/date=$d\\""
  done
  if [ -z "$missing" ]; then
    f="data/$ref.json"; mkdir -p "${f%/*}"; printf '{"ref": "%s"}\\n' "$ref" > "$f"
  else
    printf '{"missing": {"%s": [%s]}}\\n' "$ref" "$missing" >> "$DATABUILD_RESULT_PATH"
  fi
done
"""

SUMMARY_SH = """\
start="${CALENDAR_START:-2024-01-01}"; days="${CALENDAR_DAYS:-365}"
missing=""
for w in $(seq 0 $((days - 1)) | sed "s/.*/$start +& days/" | date -u -f - +%G-W%V | uniq); do
  [ -e "data/weekly/week=$w.json" ] || missing="$missing${missing:+, }\\"weekly/week=$w\\""
done
if [ -z "$missing" ]; then
  mkdir -p data/summary; printf '{"ref": "summary/all"}\\n' > data/summary/all.json
else
  printf '{"missing": {"summary/all": [%s]}}\\n' "$missing" >> "$DATABUILD_RESULT_PATH"
fi
"""

SHELL_JOBS = {"ingest": INGEST_SH, "clean": CLEAN_SH, "weekly": WEEKLY_SH, "summary": SUMMARY_SH}


def rewrite(config: str, variant: Variant) -> str:
    """The example's ``databuild.toml`` as ``variant`` wants it."""
    text = _HINT_BLOCK.sub("", config)
    if variant.hints:
        for job, patterns in HINTS.items():
            listed = ", ".join(f'"{p}"' for p in patterns)
            text = text.replace(f"[jobs.{job}]\n", f"[jobs.{job}]\ninputs = [{listed}]\n", 1)
    if variant.unbatched or variant.shell:
        text = re.sub(r"(?m)^max_batch = \d+$", "max_batch = 1", text)
    if variant.cold or variant.shell:
        text = re.sub(r"(?m)^warm = true$", "warm = false", text)
    if variant.shell:
        text = re.sub(
            r'(?m)^command = \["python", "jobs/(\w+)\.py"\]$',
            r'command = ["sh", "jobs/\1.sh"]',
            text,
        )
    return text


def make(parent: Path, variant: Variant) -> Path:
    graph = cold_build.fresh_copy(parent, f"calendar-{variant.name}")
    config = graph / "databuild.toml"
    config.write_text(rewrite(config.read_text(), variant))
    if variant.shell:
        for job, script in SHELL_JOBS.items():
            (graph / "jobs" / f"{job}.sh").write_text(script)
    return graph
