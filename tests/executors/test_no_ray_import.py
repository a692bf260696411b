"""The embedded default never loads Ray: not ``import databuild``, not the CLI, the service
host or the local executor running a job. Checked in a fresh interpreter (Ray is installed
in the test environment, so only not importing it keeps it out)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_databuild_and_the_local_path_never_import_ray(tmp_path: Path) -> None:
    (tmp_path / "databuild.toml").write_text(
        '[graph]\nname = "g"\n\n[jobs.j]\noutputs = ["out/{x}"]\ncommand = ["true"]\n'
    )
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        import databuild, databuild.cli.main, databuild.service.host, databuild.service.app
        from databuild.config import load_config
        from databuild.core.model import JobRunId
        from databuild.core.outcomes import RunFinishedReport
        from databuild.executors import LocalExecutor, RunRequest
        from databuild.core.refs import parse_ref

        config = load_config(Path({str(tmp_path)!r}) / "databuild.toml")
        assert config.executor.kind == "local"
        reports = []

        async def main():
            executor = LocalExecutor(1)
            executor.set_reporter(reports.append)
            await executor.start(RunRequest(JobRunId("r1"), config.jobs[0], (parse_ref("out/a"),),
                                            "http://127.0.0.1:9", config.root_dir, config.runs_dir))
            while not any(isinstance(r, RunFinishedReport) for r in reports):
                await asyncio.sleep(0.01)
            await executor.close()

        asyncio.run(main())
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
