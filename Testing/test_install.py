"""The on-demand install list (Resources/requirements.txt) is complete, shared with pyproject, and safe for Slicer.

A fresh Slicer has none of the library's dependencies except numpy, SimpleITK (Slicer's) and torch (the PyTorch
extension). What the module installs must therefore cover every third-party module the library imports at run
time, including lazy imports of its dependencies (MONAI's SwinUNETR needs einops, which MONAI does not require).
"""
from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from XAIExplainerLib import install
from XAIExplainerLib.errors import DependencyError, InstallDeclinedError

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "XAIExplainerLib"
#: Provided by Slicer itself (imported only by the bridge, which runs inside Slicer or with slicer-core).
SLICER_PROVIDED = {"slicer", "vtk", "vtkmodules", "qt", "ctk"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _required() -> set[str]:
    return {_normalise(r.name) for r in install.runtime_requirements()}


def _optional_extras() -> set[str]:
    """Distributions of pyproject's optional extras (data, cluster, test): allowed only as lazy imports."""
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("[project.optional-dependencies]"):text.index("[project.scripts]")]
    return {_normalise(re.split(r"[<>=!~;\[ ]", item)[0]) for item in re.findall(r'"([^"]+)"', block)}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported inside a function) for every absolute import of a file."""
    tree = ast.parse(path.read_text())
    lazy_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        out += [(name.split(".")[0], id(node) in lazy_nodes) for name in names]
    return out


def _distribution(module: str) -> str:
    dists = metadata.packages_distributions().get(module)
    assert dists, f"'{module}' is imported by the library but no installed distribution provides it"
    return _normalise(dists[0])


def test_pyproject_reads_the_same_list():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["dependencies"]' in text and "\ndependencies = [" not in text
    assert 'file = ["XAIExplainerLib/Resources/requirements.txt"]' in text
    names = [r.name for r in install.runtime_requirements()]
    assert len(names) == len(set(names))
    monai = next(r for r in install.runtime_requirements() if r.name == "monai")
    assert monai.specifier and "<" in monai.specifier  # the range pip uses, the Slicer installer uses too


def test_every_third_party_import_of_the_library_is_installed_on_demand():
    required, optional = _required(), _optional_extras()
    for path in LIBRARY.rglob("*.py"):
        for module, lazy in _imports(path):
            if module in sys.stdlib_module_names or module == "XAIExplainerLib" or module in SLICER_PROVIDED:
                continue
            dist = _distribution(module)
            if dist in required:
                continue
            assert lazy and dist in optional, (
                f"{path.relative_to(ROOT)} imports '{module}' ({dist}), which is neither in requirements.txt nor a "
                "lazily imported optional extra")


def test_a_real_run_needs_nothing_beyond_the_requirements():
    """Build the demo network and segment a small volume in a clean interpreter where every third-party module
    outside requirements.txt and their dependencies is made unimportable (as in a fresh Slicer): the run must
    still succeed, and einops (needed by MONAI's SwinUNETR, not required by MONAI) must have been loaded."""
    allowed = _closure(_required()) | {"xaiexplainer"}  # the library itself (editable install)
    blocked = sorted(module for module, dists in metadata.packages_distributions().items()
                     if not {_normalise(d) for d in dists} & allowed and module not in sys.stdlib_module_names)
    assert "captum" in blocked and "einops" not in blocked  # sanity: the fence is where it should be
    code = (
        "import importlib.abc, json, sys\n"
        f"BLOCKED = set({blocked!r})\n"
        "class Fence(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (not in requirements.txt)', name=name)\n"
        "sys.meta_path.insert(0, Fence())\n"
        "import numpy as np\n"
        "from XAIExplainerLib.models import SegmentationModel\n"
        "from XAIExplainerLib.volume import Volume\n"
        "m = SegmentationModel.load('XAIExplainerLib/Resources/DemoModel/swin_unetr_brain.pt', device='cpu')\n"
        "m.segment(Volume(np.random.default_rng(0).random((40, 40, 40)).astype(np.float32) * 100, "
        "spacing=(3.0, 3.0, 3.0)))\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "einops" in loaded and "monai" in loaded  # the case that broke the demo in a fresh Slicer


def _closure(names: set[str]) -> set[str]:
    """The distributions and everything they require (extras excluded), as pip would install them."""
    from packaging.requirements import Requirement

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # not installed here (e.g. a Windows-only dependency)
            continue
        for text in requirements:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_normalise(req.name))
    return seen


def test_constraints_pin_slicer_owned_packages_and_torch():
    text = install.constraints_text()
    for name in ("numpy", "SimpleITK", "torch"):
        assert f"{name}=={metadata.version(name)}" in text.splitlines()


def test_torch_too_old_is_refused_with_a_clear_message():
    install.check_torch_version(metadata.version("torch"))  # the installed one is fine
    with pytest.raises(DependencyError, match=r"PyTorch 1\.13\.1\+cu117 is installed but XAIExplainer needs torch>="):
        install.check_torch_version("1.13.1+cu117")


def test_missing_packages_are_installed_with_constraints_after_confirmation(monkeypatch, tmp_path):
    real = install.installed_version
    monkeypatch.setattr(install, "installed_version", lambda name: None if name == "einops" else real(name))
    calls, asked = [], []

    def pip_install(args):
        constraints = Path(args[args.index("-c") + 1])
        calls.append((list(args), constraints.read_text()))

    installed = install.ensure_dependencies(pip_install, confirm=lambda m: asked.append(m) or True)
    einops = next(str(r) for r in install.runtime_requirements() if r.name == "einops")
    assert installed == [einops] and calls[0][0][0] == einops and "einops" in asked[0]
    assert f"torch=={real('torch')}" in calls[0][1]


def test_declining_changes_nothing_and_raises_a_calm_error(monkeypatch):
    real = install.installed_version
    monkeypatch.setattr(install, "installed_version", lambda name: None if name == "monai" else real(name))
    called = []
    with pytest.raises(InstallDeclinedError, match="declined; nothing was changed"):
        install.ensure_dependencies(lambda args: called.append(args), confirm=lambda m: False)
    assert called == []


def test_torch_absent_goes_through_the_pytorch_extension_with_the_version_range(monkeypatch):
    real = install.installed_version
    monkeypatch.setattr(install, "installed_version", lambda name: None if name == "torch" else real(name))
    asked = []
    with pytest.raises(InstallDeclinedError):
        install.ensure_dependencies(lambda args: None, install_torch=lambda req: asked.append(req))
    assert asked == [install.torch_requirement()] and asked[0].startswith(">=")


def test_slicer_owned_numpy_is_never_pip_installed(monkeypatch):
    real = install.installed_version
    monkeypatch.setattr(install, "installed_version", lambda name: "1.20.0" if name == "numpy" else real(name))
    called = []
    with pytest.raises(DependencyError, match=r"ships numpy 1\.20\.0, but XAIExplainer needs numpy>="):
        install.ensure_dependencies(lambda args: called.append(args), confirm=lambda m: True)
    assert called == []


def test_windows_launch_hides_the_console_and_gets_its_own_group(monkeypatch):
    """The flags slicer.util.launchConsoleProcess uses (checked with Windows' constants, simulated on POSIX)."""
    import subprocess

    from XAIExplainerLib import background

    class StartupInfo:
        def __init__(self):
            self.dwFlags, self.wShowWindow = 0, 1

    for name, value in (("STARTUPINFO", StartupInfo), ("STARTF_USESHOWWINDOW", 1),
                        ("CREATE_NEW_PROCESS_GROUP", 0x200), ("CREATE_NO_WINDOW", 0x08000000)):
        monkeypatch.setattr(subprocess, name, value, raising=False)
    monkeypatch.setattr(background.os, "name", "nt")
    options = background._popen_platform_options()
    assert options["creationflags"] == 0x200 | 0x08000000
    assert options["startupinfo"].dwFlags & 1 and options["startupinfo"].wShowWindow == 0
    monkeypatch.setattr(background.os, "name", "posix")
    assert background._popen_platform_options() == {"start_new_session": True}
