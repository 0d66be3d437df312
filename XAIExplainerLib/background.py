"""A command run in a child process whose output is read without blocking (the Slicer module's long work).

Slicer's GUI must never wait on a model: the module starts ``PythonSlicer -m XAIExplainerLib.cli ...`` through
:class:`BackgroundCommand` and polls it from a ``qt.QTimer``. A reader thread moves output lines into a queue, so
:meth:`BackgroundCommand.poll` returns at once; :meth:`BackgroundCommand.cancel` stops the whole process tree, so
Cancel really stops the computation on every OS: on Windows ``PythonSlicer.exe`` is a launcher whose child
``python-real.exe`` does the work, so terminating the launcher alone would leave the GPU busy. The tree is
collected with psutil (as SlicerMONAIAuto3DSeg does); on Linux/macOS the process group is signalled as well, which
also reaches workers that were re-parented. On Windows the process starts without a console window, with the
flags ``slicer.util.launchConsoleProcess`` uses. Qt-free, so it is tested with pytest.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Mapping, Sequence

from .progress import parse_progress_line

__all__ = ["BackgroundCommand", "BackgroundJob", "CommandOutput", "kill_process_tree", "process_tree", "python_module_command"]


class CommandOutput:
    """What :meth:`BackgroundCommand.poll` found since the last call."""

    def __init__(self) -> None:
        self.progress: tuple[float, str] | None = None  # the latest PROGRESS line, if any
        self.lines: list[str] = []  # every other line (stdout and stderr, in order)


class BackgroundCommand:
    """Run ``args`` in a child process; poll its output and exit status without blocking."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        self.args = [str(a) for a in args]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.output: list[str] = []  # every non-progress line so far (for error messages)
        self.cancelled = False
        self._process: subprocess.Popen | None = None
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self) -> "BackgroundCommand":
        """Start the process (stderr merged into stdout, line-buffered text)."""
        if self._process is not None:
            raise RuntimeError("This command was already started; create a new BackgroundCommand to run again.")
        self._process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            encoding="utf-8", errors="replace", bufsize=1, env=self.env, cwd=self.cwd, **_popen_platform_options(),
        )
        self._reader = threading.Thread(target=self._read, name="XAIExplainer output reader", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self._lines.put(None)  # end of output

    @property
    def running(self) -> bool:
        """True until the process has exited *and* all of its output was read."""
        if self._process is None:
            return False
        return self._process.poll() is None or (self._reader is not None and self._reader.is_alive()) \
            or not self._lines.empty()

    @property
    def returncode(self) -> int | None:
        return None if self._process is None or self.running else self._process.returncode

    def poll(self) -> CommandOutput:
        """Drain the lines that arrived since the last call (never blocks)."""
        out = CommandOutput()
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            parsed = parse_progress_line(line)
            if parsed is not None:
                out.progress = parsed
            else:
                out.lines.append(line)
                self.output.append(line)
        return out

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process ends (console / tests only; the GUI polls instead)."""
        if self._process is None:
            raise RuntimeError("The command was not started.")
        code = self._process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    def cancel(self, grace_seconds: float = 3.0) -> None:
        """Stop the process and every process it started: terminate, then kill what is left after the grace time."""
        if self._process is None or self._process.poll() is not None:
            return
        self.cancelled = True
        kill_process_tree(self._process.pid, grace_seconds, root=self._process)

    def error_text(self, max_lines: int = 20) -> str:
        """The lines that explain a failure: the CLI's one-line ``error:`` if present, else the output's tail."""
        errors = [line for line in self.output if line.startswith("error:")]
        if errors:
            return errors[-1][len("error:"):].strip()
        return "\n".join(self.output[-max_lines:]) or f"exit code {self.returncode}"


def _popen_platform_options() -> dict:
    """Own process group (POSIX) or no console window + own process group (Windows, like launchConsoleProcess)."""
    if os.name == "posix":
        return {"start_new_session": True}
    info = subprocess.STARTUPINFO()  # type: ignore[attr-defined]  (Windows only)
    info.dwFlags |= subprocess.STARTF_USESHOWWINDOW  # type: ignore[attr-defined]
    info.wShowWindow = 0  # SW_HIDE: no console window per run
    flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
    return {"startupinfo": info, "creationflags": flags}


def process_tree(pid: int) -> list:
    """``psutil.Process`` objects of ``pid`` and all its descendants (children first), [] when it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [*root.children(recursive=True)[::-1], root]
    except psutil.NoSuchProcess:
        return []


def kill_process_tree(pid: int, grace_seconds: float = 3.0, root: subprocess.Popen | None = None) -> None:
    """Terminate ``pid`` and its descendants, kill the survivors after ``grace_seconds``.

    The tree is collected *before* anything is signalled: once the launcher dies its children are re-parented and
    could no longer be found from it. ``root``: the ``Popen`` of ``pid``, which then reaps it (so its exit code is
    kept; psutil would reap it behind Popen's back).
    """
    import psutil

    processes = process_tree(pid)
    if root is not None:
        processes = [proc for proc in processes if proc.pid != pid]
    if os.name == "posix":
        try:
            os.killpg(pid, signal.SIGTERM)  # the group: also workers that already left the tree
        except (ProcessLookupError, PermissionError):
            pass
    for proc in processes:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(processes, timeout=grace_seconds)
    if os.name == "posix":
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_seconds)
    if root is not None:
        _stop_popen(root, grace_seconds)


def _stop_popen(process: subprocess.Popen, grace_seconds: float) -> None:
    try:
        process.terminate()
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except ProcessLookupError:
        pass


def python_module_command(python: str | None, module: str, *args: str) -> list[str]:
    """``[python, "-m", module, *args]`` (``sys.executable`` when no interpreter is given)."""
    return [python or sys.executable, "-m", module, *[str(a) for a in args]]


class BackgroundJob:
    """One CLI run of the Slicer module: its command, its work folder and what to do with its result record.

    Why a class here and not module code: starting, polling, finishing and cancelling are the same for every
    command, and Qt-free they are tested without Slicer. ``args`` is the full command line; ``--result-json`` is
    appended. ``load(record)`` turns the CLI's JSON record into nodes; its exceptions become the error message.
    The work folder (with the exported input) is deleted when the job ends, however it ends.
    """

    def __init__(self, args: Sequence[str], work_dir: "os.PathLike[str] | str", load,
                 on_progress=None, on_finished=None, env: Mapping[str, str] | None = None) -> None:
        from pathlib import Path

        self.work_dir = Path(work_dir)
        self.result_file = self.work_dir / "result.json"
        self.command = BackgroundCommand([*args, "--result-json", str(self.result_file)], env=env)
        self.load = load
        self.on_progress = on_progress
        self.on_finished = on_finished

    def start(self) -> "BackgroundJob":
        self.command.start()
        return self

    @property
    def running(self) -> bool:
        return self.command.running

    def poll(self) -> None:
        """Log new output lines and forward the latest progress (call it from a timer)."""
        import logging

        out = self.command.poll()
        for line in out.lines:
            logging.info(f"XAIExplainer: {line}")
        if out.progress is not None and self.on_progress is not None:
            self.on_progress(*out.progress)

    def finish(self):
        """``(result, error)`` once the command ended: the loaded record, or why there is none. Cleans up."""
        import json
        import logging
        import shutil

        self.poll()
        result, error = None, None
        if self.command.cancelled:
            error = "cancelled"
        elif self.command.returncode != 0:
            error = self.command.error_text()
        elif not self.result_file.is_file():
            error = f"the background process reported no result ({self.result_file.name} is missing); see the log"
        else:
            try:
                result = self.load(json.loads(self.result_file.read_text()))
            except Exception as exc:  # noqa: BLE001 - reported to the user, with the traceback in the log
                logging.exception("XAIExplainer: loading the results failed")
                error = f"{type(exc).__name__}: {exc}"
        shutil.rmtree(self.work_dir, ignore_errors=True)
        if self.on_finished is not None:
            self.on_finished(result, error)
        return result, error

    def cancel(self) -> None:
        """Stop the whole process tree and delete the work folder."""
        import shutil

        self.command.cancel()
        shutil.rmtree(self.work_dir, ignore_errors=True)
