"""The Slicer module's work path without Slicer: the CLI run as a background process, its progress lines, Cancel,
and reading the saved explanation back (what ``XAIExplainerLogic`` does before the bridge makes nodes)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from XAIExplainerLib.background import BackgroundCommand, python_module_command
from XAIExplainerLib.errors import VolumeReadError
from XAIExplainerLib.pipelines.agg2exp_io import load_explanation
from XAIExplainerLib.volume import Volume, read_volume, write_volume

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(command: BackgroundCommand, timeout: float = 120.0) -> list[tuple[float, str]]:
    """Poll like the module's QTimer does; return every progress update seen."""
    progress = []
    deadline = time.monotonic() + timeout
    while command.running:
        assert time.monotonic() < deadline, "background command did not finish"
        out = command.poll()
        if out.progress is not None:
            progress.append(out.progress)
        time.sleep(0.02)
    out = command.poll()
    if out.progress is not None:
        progress.append(out.progress)
    return progress


def test_background_command_reports_progress_output_and_errors():
    script = ("import sys\nprint('PROGRESS 0.2500 loading', flush=True)\nprint('a log line', flush=True)\n"
              "print('PROGRESS 1.0000 done', flush=True)\nprint('error: No weights at x.pt', file=sys.stderr)\n"
              "sys.exit(2)")
    command = BackgroundCommand([sys.executable, "-c", script]).start()
    progress = _run(command)
    assert progress[-1] == (1.0, "done") and all(p in [(0.25, "loading"), (1.0, "done")] for p in progress)
    assert command.returncode == 2 and "a log line" in command.output
    assert command.error_text() == "No weights at x.pt"  # what the module shows in its error dialog


def test_cancel_stops_the_process_and_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    script = ("import subprocess, sys, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
              "print('PROGRESS 0.1000 working', flush=True)\ntime.sleep(60)")
    command = BackgroundCommand([sys.executable, "-c", script]).start()
    deadline = time.monotonic() + 30
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(marker.read_text())
    started = time.monotonic()
    command.cancel()
    assert time.monotonic() - started < 5 and command.cancelled
    _run(command, timeout=10)
    assert command.returncode != 0
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # the grandchild (a worker the CLI spawned) is gone too
        for _ in range(50):
            os.kill(child, 0)
            # a killed child stays a zombie until init reaps it; /proc tells zombies apart
            state = Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0] \
                if Path(f"/proc/{child}/stat").exists() else "X"
            if state in ("Z", "X"):
                raise ProcessLookupError
            time.sleep(0.1)


class ThresholdNet(torch.nn.Module):
    """Class 1 ("dense") where the normalised CT exceeds 0.5 (0 HU): logit 40 (x - 0.5); background logit 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 40 * (x - 0.5)], dim=1)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """The module test's synthetic case: a 200 HU ball in -500 HU, 32^3 at 2 mm, and a TorchScript model."""
    root = tmp_path_factory.mktemp("module_cli")
    torch.jit.trace(ThresholdNet(), torch.zeros(1, 1, 32, 32, 32)).save(str(root / "threshold.ts"))
    (root / "threshold.json").write_text(json.dumps({
        "label_names": ["background", "dense"], "modality": "CT", "spacing": [2.0, 2.0, 2.0],
        "roi_size": [32, 32, 32]}))
    z, y, x = np.mgrid[:32, :32, :32]
    ball = ((x - 15.5) ** 2 + (y - 15.5) ** 2 + (z - 15.5) ** 2) <= 8.0 ** 2
    # what volume_from_node gives for a node with IJK->RAS = diag(2, 2, 2): LPS direction diag(-1, -1, 1)
    volume = Volume(np.where(ball, 200, -500).astype(np.int16), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0),
                    direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    write_volume(volume, root / "input.nii.gz")
    return root, ball


def test_segment_in_the_background_as_the_module_runs_it(scan):
    root, ball = scan
    args = python_module_command(sys.executable, "XAIExplainerLib.cli", "segment", "--input", root / "input.nii.gz",
                                 "--model", root / "threshold.ts", "--output", root / "labels.nii.gz",
                                 "--device", "cpu", "--progress-lines", "--result-json", root / "result.json")
    command = BackgroundCommand(args, env=ENV).start()
    progress = _run(command)
    assert command.returncode == 0, command.error_text()
    fractions = [f for f, _ in progress]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    record = json.loads((root / "result.json").read_text())  # what the module reads, not the printed summary
    assert record == {"command": "segment", "labels": str(root / "labels.nii.gz"),
                      "label_names": ["background", "dense"], "probabilities": []}
    labels = read_volume(root / "labels.nii.gz")
    assert np.array_equal(labels.array == 1, ball)


def test_explain_folder_reads_back_with_the_known_gradient(scan):
    root, ball = scan
    out = root / "explanation"
    args = python_module_command(sys.executable, "XAIExplainerLib.cli", "explain", "--input", root / "input.nii.gz",
                                 "--model", root / "threshold.ts", "--method", "vanilla_gradient", "--output", out,
                                 "--classes", "dense", "--device", "cpu", "--graph-threshold", "0.8", "--progress-lines",
                                 "--result-json", root / "explain.json")
    command = BackgroundCommand(args, env=ENV).start()
    progress = _run(command, timeout=180)
    assert command.returncode == 0, command.error_text()
    assert progress[-1] == (1.0, "done")
    record = json.loads((root / "explain.json").read_text())
    assert record == {"command": "explain", "folder": str(out), "class_names": ["dense"], "absent_classes": []}

    image = read_volume(root / "input.nii.gz")
    expl = load_explanation(out, image=image)
    assert expl.image is image and expl.class_names == ["dense"] and expl.label_names == ["background", "dense"]
    # d/dx of sum over the predicted ball of 40 (x - 0.5) is 40 on the ball and 0 elsewhere
    heat = expl.attributions["dense"]
    assert heat.same_grid(image)
    np.testing.assert_allclose(heat.array, np.where(ball, 40.0, 0.0), atol=1e-4)
    # matrix: all of the class's mass lies in its own segment (RoIs = predicted segments)
    saved = json.loads((out / "matrix.json").read_text())
    np.testing.assert_array_equal(expl.matrix, np.asarray(saved["matrix"]))
    assert expl.roi_names == ["background", "dense"]
    np.testing.assert_allclose(expl.matrix, [[0.0, 1.0]], atol=1e-6)
    assert expl.context_ratio["dense"] == pytest.approx(1.0)
    graph = json.loads((out / "graph.json").read_text())
    assert sorted(expl.graph.edges) == sorted((e["source"], e["target"]) for e in graph["edges"])
    assert expl.provenance["method"] == "vanilla_gradient" and len(expl.provenance["model"]["sha256"]) == 64
    assert np.array_equal(expl.labels.array == 1, ball)


def test_load_explanation_names_what_is_missing(tmp_path):
    with pytest.raises(VolumeReadError, match="No explanation folder"):
        load_explanation(tmp_path / "absent")
    (tmp_path / "provenance.json").write_text("{}")
    with pytest.raises(VolumeReadError, match="has no matrix.json"):
        load_explanation(tmp_path)


def test_background_job_reports_a_missing_result_record_and_always_removes_its_folder(tmp_path):
    """A command that exits 0 without writing its --result-json record is a failure, not an empty result."""
    from XAIExplainerLib.background import BackgroundJob

    work = tmp_path / "work"
    work.mkdir()
    (work / "input.nii.gz").write_bytes(b"copy of the user's volume")
    finished = []
    job = BackgroundJob([sys.executable, "-c", "import sys"], work, load=lambda record: record,
                        on_finished=lambda r, e: finished.append((r, e))).start()
    while job.running:  # polled like the module's QTimer does (running stays True until the output is read)
        job.poll()
        time.sleep(0.02)
    result, error = job.finish()
    assert result is None and "reported no result" in error and finished == [(None, error)]
    assert not work.exists()
    work.mkdir()
    script = "import json, sys; json.dump({'ok': 1}, open(sys.argv[sys.argv.index('--result-json') + 1], 'w'))"
    job = BackgroundJob([sys.executable, "-c", script], work, load=lambda record: record["ok"] + 1).start()
    while job.running:  # polled like the module's QTimer does (running stays True until the output is read)
        job.poll()
        time.sleep(0.02)
    assert job.finish() == (2, None) and not work.exists()
