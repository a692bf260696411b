"""What every benchmark shares: the commit and machine a figure was taken on, percentiles,
printing, and writing results under ``bench/results/``.

Imported by the scenario modules and ``bench.__main__``. It measures nothing itself.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "calendar"


def git_commit() -> str:
    """``git rev-parse --short HEAD``, with `` dirty`` when the work tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return head + (" dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "memory_gb": _memory_gb(),
    }


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def compile_sources() -> bool:
    """Byte-compile DataBuild's own sources, as ``pip install`` does for an installed
    package (and as Luigi's were when it was installed). An editable install writes them on
    first import, unless PYTHONDONTWRITEBYTECODE is set (it is on some CI machines and
    sandboxes): then every ``databuild`` process would compile ~80 modules from source
    (~0.1 s) and the figures would measure the compiler, not DataBuild."""
    return bool(compileall.compile_dir(ROOT / "src" / "databuild", quiet=2))


def header(title: str) -> dict[str, Any]:
    """Print and return the commit and machine line every benchmark starts with, after
    making sure DataBuild's sources are byte-compiled (``compile_sources``)."""
    compiled = compile_sources()
    info: dict[str, Any] = {
        "commit": git_commit(),
        "machine": machine(),
        "sources_compiled": compiled,
    }
    m = info["machine"]
    print(f"== {title} -- commit {info['commit']}")
    print(
        f"   machine: {m['platform']}, {m['cpu_count']} CPUs, Python {m['python']}, "
        f"{m['memory_gb']} GB RAM"
    )
    return info


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), nearest-rank on sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(values_seconds: Sequence[float]) -> dict[str, float]:
    """Mean, p50, p99 and max of durations given in seconds, in milliseconds."""
    ms = [v * 1000 for v in values_seconds]
    return {
        "n": len(ms),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
    }


def write_result(name: str, figures: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write one scenario's figures (with commit and machine) to bench/results/NAME.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**info, "scenario": name, "figures": figures}, indent=2) + "\n")
    print(f"   written to {path.relative_to(ROOT)}")
    return path


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``databuild`` subprocesses: this venv first on PATH, since the
    example jobs run ``python`` and need DataBuild importable."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("DATABUILD_URL", None)
    env.update(extra or {})
    return env


def databuild_exe() -> str:
    return str(VENV_BIN / "databuild")
