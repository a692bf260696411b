"""A warm worker: one Python interpreter that runs a Python job's script run after run.

The local executor starts it (``python -m databuild.warm_worker``) for a job declared with
``warm = true`` and sends it one request per run on its standard input: the argv, the
environment and the working directory the job would have had as a fresh process. For each
request it runs the script as ``__main__`` (as ``runpy`` would) with exactly that argv and
environment, so the job protocol is unchanged (argv, DATABUILD_* variables, result file,
exit code); what it saves is the interpreter's start and the imports. After each run it
writes an end marker with the exit code to its output, which the executor reads.

Standard library only, like the SDK: it lives in every warm job process. It must not hold
state from one run to the next beyond the interpreter's cached library modules and the
script's compiled code (while the file is unchanged): each run gets a new ``__main__``, the
environment is replaced, and modules imported from the graph's directory are forgotten.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
import types
from types import CodeType
from typing import Any

TOKEN_VARIABLE = "DATABUILD_WORKER_TOKEN"


def _die_with_parent() -> None:
    """Linux: if the service dies, so does this worker (no orphan keeps building)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run(request: dict[str, Any]) -> int:
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # undo a previous job's redirect
    _replace_environment(request["env"])
    os.chdir(request["cwd"])
    argv = [str(a) for a in request["argv"]]
    sys.argv = argv
    script = os.path.abspath(argv[0])
    sys.path[0] = os.path.dirname(script)
    try:
        _run_script(script)
    except SystemExit as exc:
        return _exit_code(exc)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


_compiled: dict[str, tuple[tuple[int, int], CodeType]] = {}


def _run_script(script: str) -> None:
    """``runpy.run_path(script, run_name="__main__")``, with the script compiled once while
    it is unchanged (same size and modification time), not once per run."""
    stat = os.stat(script)
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _compiled.get(script)
    if cached is None or cached[0] != stamp:
        with open(script, "rb") as source:
            code = compile(source.read(), script, "exec", dont_inherit=True)
        _compiled[script] = (stamp, code)
    else:
        code = cached[1]
    module = types.ModuleType("__main__")
    module.__file__ = script
    module.__cached__ = None  # type: ignore[attr-defined]
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    main_module = sys.modules.get("__main__")
    sys.modules["__main__"] = module  # as runpy does: pickle and dataclasses look it up
    try:
        exec(code, module.__dict__)
    finally:
        if main_module is not None:
            sys.modules["__main__"] = main_module


def _replace_environment(env: dict[str, str]) -> None:
    """``os.environ`` becomes exactly ``env``. Only what differs is changed: from one run to
    the next that is the run's own DATABUILD_* variables, not the forty-odd others (each
    change is a setenv or unsetenv call)."""
    environ = os.environ
    for name in [name for name in environ if name not in env]:
        del environ[name]
    for name, value in env.items():
        if environ.get(name) != value:
            environ[name] = value


def _forget_graph_modules(root: str, before: set[str]) -> None:
    """Modules the job imported from its own directory are read afresh next run. Only the
    modules imported during the run (not in ``before``) are looked at: the others were
    there before it, and those from the graph's directory never outlive a run."""
    prefix = os.path.abspath(root) + os.sep
    for name in [name for name in sys.modules if name not in before]:
        path = getattr(sys.modules[name], "__file__", None) or ""
        if path.startswith(prefix):
            del sys.modules[name]


class _Asker:
    """The SDK's question "which of these refs are live?" asked over the worker's own pipe
    (a line ``<RS><token>?<JSON refs>`` on its output, one JSON line back on its input)
    instead of a new HTTP connection per run. None when the service has no answer for this
    worker (the SDK then asks over HTTP)."""

    def __init__(self, control: Any, marker: bytes) -> None:
        self._control = control
        self._marker = marker
        self._lock = threading.Lock()  # a job's threads may ask at once: one at a time

    def __call__(self, refs: list[str]) -> dict[str, str] | None:
        with self._lock:
            for stream in (sys.stdout, sys.stderr):  # what the job printed goes first
                with contextlib.suppress(Exception):
                    stream.flush()
            os.write(1, self._marker + json.dumps(refs).encode() + b"\n")
            line = self._control.readline()
        if not line:
            raise EOFError("the DataBuild service closed the warm worker's input")
        reply = json.loads(line)
        if reply.get("unavailable"):
            return None
        if "error" in reply:
            raise ValueError(str(reply["error"]))
        return {str(k): str(v) for k, v in reply["statuses"].items()}


def main() -> None:
    token = os.environ.pop(TOKEN_VARIABLE, "")
    if not token:
        sys.exit("databuild.warm_worker is started by DataBuild's local executor, not by hand")
    _die_with_parent()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    with contextlib.suppress(ImportError):  # what nearly every Python job imports first;
        import databuild.sdk  # noqa: F401  (its runs ask over this worker's pipe, below)
    control = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # a job that reads stdin must not read the next request
    marker = b"\x1e" + token.encode() + b":"
    sdk = sys.modules.get("databuild.sdk")
    if sdk is not None:
        sdk._ask_service = _Asker(control, b"\x1e" + token.encode() + b"?")  # type: ignore[attr-defined]
    for line in control:
        request = json.loads(line)
        before = set(sys.modules)
        code = _run(request)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.write(1, marker + str(code).encode() + b"\n")
        _forget_graph_modules(request["cwd"], before)


if __name__ == "__main__":
    main()
