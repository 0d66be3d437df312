"""On-demand installation of the library's run-time dependencies (what the Slicer module runs before a job).

Why a library helper and not module code: the list of what to install must be the same one pip uses for the
package (``Resources/requirements.txt``, read by ``pyproject.toml`` too), the checks are testable without Slicer,
and the Python console (``XAIExplainerLogic().segment(...)``) gets the same guarantees as the buttons.

Slicer owns numpy and SimpleITK and the PyTorch extension owns torch: their installed versions are written into a
pip constraints file so that installing e.g. MONAI can never replace them (a CPU torch silently replacing the
extension's CUDA build is the classic failure). Qt-free; the caller passes the pip / confirmation / torch-install
functions (``slicer.util.pip_install`` etc.).
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import DependencyError, InstallDeclinedError

__all__ = ["REQUIREMENTS_FILE", "PINNED_DISTRIBUTIONS", "Requirement", "runtime_requirements", "missing_requirements",
           "constraints_text", "torch_requirement", "check_torch_version", "check_host_packages",
           "ensure_dependencies"]

REQUIREMENTS_FILE = Path(__file__).resolve().parent / "Resources" / "requirements.txt"
#: Distributions that belong to the host application (Slicer / its PyTorch extension): pinned, never upgraded.
PINNED_DISTRIBUTIONS = ("numpy", "SimpleITK", "torch")
_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One line of the requirements file: distribution name and version specifier (e.g. ``>=1.4,<1.7``)."""

    name: str
    specifier: str = ""

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"

    def is_satisfied_by(self, version: str) -> bool:
        """Whether an installed ``version`` meets the specifier (``packaging`` ships with Slicer and pip)."""
        if not self.specifier:
            return True
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        return Version(version) in SpecifierSet(self.specifier)


def runtime_requirements(path: Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """The requirements of ``Resources/requirements.txt`` (comments and blank lines skipped)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _SPEC.match(line)
        if match is None:
            raise DependencyError(f"Unreadable requirement '{line}' in {path}.")
        out.append(Requirement(match.group(1), match.group(2).replace(" ", "")))
    return out


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when pip metadata says it is absent."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_requirements(requirements: Sequence[Requirement] | None = None,
                         skip: Sequence[str] = ("torch",)) -> list[Requirement]:
    """Requirements that are absent or whose installed version is outside the range (``skip``: handled apart)."""
    wanted = runtime_requirements() if requirements is None else requirements
    missing = []
    for req in wanted:
        if req.name in skip:
            continue
        version = installed_version(req.name)
        if version is None or not req.is_satisfied_by(version):
            missing.append(req)
    return missing


def constraints_text(pinned: Sequence[str] = PINNED_DISTRIBUTIONS) -> str:
    """A pip constraints file pinning the installed versions of ``pinned`` (absent ones are left out)."""
    pins = [f"{name}=={installed_version(name)}" for name in pinned if installed_version(name)]
    return "\n".join(pins) + "\n"


def torch_requirement(requirements: Sequence[Requirement] | None = None) -> str:
    """The torch version range of the requirements (e.g. ``>=2.2``), handed to the PyTorch extension's installer."""
    wanted = runtime_requirements() if requirements is None else requirements
    return next((r.specifier for r in wanted if r.name == "torch"), "")


def check_torch_version(version: str, requirement: str | None = None) -> None:
    """Refuse a torch that is too old, with how to fix it, instead of letting pip swap in another build."""
    spec = torch_requirement() if requirement is None else requirement
    base = version.split("+", 1)[0]
    if not Requirement("torch", spec).is_satisfied_by(base):
        raise DependencyError(
            f"PyTorch {version} is installed but XAIExplainer needs torch{spec}. Open the PyTorch Utils module, "
            f"uninstall PyTorch and install a newer version (or update the PyTorch extension), then restart Slicer.")


def check_host_packages(requirements: Sequence[Requirement] | None = None,
                        host: Sequence[str] = ("numpy", "SimpleITK")) -> None:
    """Slicer's own numpy and SimpleITK are never pip-installed: refuse clearly when one is outside the range.

    A package shipped without pip metadata but importable is Slicer's build: accepted as it is.
    """
    wanted = runtime_requirements() if requirements is None else requirements
    for req in wanted:
        if req.name not in host:
            continue
        version = installed_version(req.name)
        if version is None:
            if importlib.util.find_spec(req.name) is None:
                raise DependencyError(f"{req.name} is missing from this Python; reinstall 3D Slicer.")
            continue
        if not req.is_satisfied_by(version):
            raise DependencyError(f"This Slicer ships {req.name} {version}, but XAIExplainer needs {req}; "
                                  "use a newer 3D Slicer release.")


def ensure_dependencies(pip_install: Callable[[list[str]], None], confirm: Callable[[str], bool] | None = None,
                        install_torch: Callable[[str], str | None] | None = None,
                        constraints_folder: Path | None = None) -> list[str]:
    """Install what is missing; returns the pip requirement strings that were installed.

    ``install_torch(requirement)`` installs torch (the PyTorch extension's logic) and returns its version, or None
    when the user declined. ``confirm(message)`` asks before anything is downloaded; declining raises
    :class:`InstallDeclinedError` (the GUI shows it calmly). Installed torch, numpy and SimpleITK are pinned.
    """
    torch_version = installed_version("torch")
    if torch_version is None:
        if install_torch is None:
            raise DependencyError("PyTorch is not installed: install the 'PyTorch' extension from the Extensions "
                                  "Manager, then install torch from its PyTorch Utils module.")
        torch_version = install_torch(torch_requirement())
        if torch_version is None:
            raise InstallDeclinedError("PyTorch was not installed, so nothing can be computed yet.")
    check_torch_version(torch_version)
    check_host_packages()
    missing = [str(r) for r in missing_requirements(skip=PINNED_DISTRIBUTIONS)]
    if not missing:
        return []
    if confirm is not None and not confirm(
            "XAIExplainer needs these Python packages, which will now be downloaded and installed: "
            f"{', '.join(missing)}. This needs a network connection and can take a few minutes."):
        raise InstallDeclinedError(f"Installation of {', '.join(missing)} was declined; nothing was changed.")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="XAIExplainer-pip-", dir=constraints_folder) as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text(constraints_text())
        pip_install([*missing, "-c", str(constraints)])
    importlib.invalidate_caches()
    return missing
