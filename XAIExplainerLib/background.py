"""A command run in a child process whose output is read without blocking (the Slicer module's long work).

Slicer's GUI must never wait on a model: the module starts ``PythonSlicer -m XAIExplainerLib.cli ...`` through
:class:`BackgroundCommand` and polls it from a ``qt.QTimer``. A reader thread moves output lines into a queue, so
:meth:`BackgroundCommand.poll` returns at once; :meth:`BackgroundCommand.cancel` terminates the process (and its
children on POSIX), so Cancel really stops the computation. Qt-free, so it is tested with pytest.
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

__all__ = ["BackgroundCommand", "CommandOutput", "python_module_command"]


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
        popen_kwargs: dict = {}
        if os.name == "posix":
            popen_kwargs["start_new_session"] = True  # own process group: cancel() stops workers it spawned too
        else:
            popen_kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        self._process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            encoding="utf-8", errors="replace", bufsize=1, env=self.env, cwd=self.cwd, **popen_kwargs,
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
        """Stop the process: terminate (SIGTERM to its group), then kill if it has not exited after the grace time."""
        if self._process is None or self._process.poll() is not None:
            return
        self.cancelled = True
        try:
            if os.name == "posix":
                os.killpg(self._process.pid, signal.SIGTERM)
            else:
                self._process.terminate()
            self._process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            if os.name == "posix":
                os.killpg(self._process.pid, signal.SIGKILL)
            else:
                self._process.kill()
            self._process.wait()
        except ProcessLookupError:
            pass

    def error_text(self, max_lines: int = 20) -> str:
        """The lines that explain a failure: the CLI's one-line ``error:`` if present, else the output's tail."""
        errors = [line for line in self.output if line.startswith("error:")]
        if errors:
            return errors[-1][len("error:"):].strip()
        return "\n".join(self.output[-max_lines:]) or f"exit code {self.returncode}"


def python_module_command(python: str | None, module: str, *args: str) -> list[str]:
    """``[python, "-m", module, *args]`` (``sys.executable`` when no interpreter is given)."""
    return [python or sys.executable, "-m", module, *[str(a) for a in args]]
