#!/usr/bin/env python3
"""Rewrite the generated file lists in the extension's CMakeLists.txt files from the files on disk.

Slicer installs a scripted library only with the files its CMakeLists.txt names; a file added to the source
tree but not to the list is silently missing from the packaged extension. The lists are therefore explicit
(CMake needs them so) but generated: this script replaces the lines between

    # BEGIN GENERATED <KIND> (Testing/update_cmake_lists.py)
    # END GENERATED <KIND>

with every ``.py`` file (``KIND`` = ``SCRIPTS``) or every other file (``KIND`` = ``RESOURCES``) under the
CMakeLists.txt's folder, skipping ``__pycache__``, byte code, hidden files, files git ignores and CMakeLists.txt
itself.
Files whose CMakeLists.txt has no markers are left alone. ``Testing/test_packaging.py`` checks the result.

Usage: ``python Testing/update_cmake_lists.py [--check]`` (``--check`` changes nothing and exits 1 when a
list is out of date), or ``make cmake-lists``.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The folders whose CMakeLists.txt may carry generated lists.
PACKAGE_DIRS = ("XAIExplainerLib", "XAIExplainer")
KINDS = ("SCRIPTS", "RESOURCES")
_BLOCK = re.compile(
    r"(?P<begin>^(?P<indent>[ \t]*)# BEGIN GENERATED (?P<kind>SCRIPTS|RESOURCES)\b[^\n]*\n)"
    r"(?P<body>.*?)"
    r"(?P<end>^[ \t]*# END GENERATED (?P=kind)\b[^\n]*$)",
    re.MULTILINE | re.DOTALL,
)


def is_packaged(path: Path, folder: Path) -> bool:
    """Whether a file belongs in the installed extension (not caches, byte code, hidden or build files)."""
    rel = path.relative_to(folder)
    if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
        return False
    return path.is_file() and path.suffix not in {".pyc", ".pyo"} and path.name != "CMakeLists.txt"


def _not_git_ignored(folder: Path, paths: list[Path]) -> list[Path]:
    """Drop paths that git ignores (build outputs, caches), so the lists describe what a fresh clone holds."""
    if not paths:
        return paths
    try:
        done = subprocess.run(
            ["git", "check-ignore", "--stdin", "-z"], cwd=folder, input="\0".join(map(str, paths)) + "\0",
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return paths  # no git: every file on disk counts
    if done.returncode not in (0, 1):  # 1 = nothing ignored; 128 = not a repository
        return paths
    ignored = {Path(p) for p in done.stdout.split("\0") if p}
    return [p for p in paths if p not in ignored]


def packaged_files(folder: Path) -> list[Path]:
    """The files under ``folder`` that belong in the installed extension, sorted."""
    return _not_git_ignored(folder, [p for p in sorted(folder.rglob("*")) if is_packaged(p, folder)])


def files_on_disk(folder: Path) -> dict[str, list[str]]:
    """``{"SCRIPTS": [...], "RESOURCES": [...]}``: POSIX paths relative to ``folder``, sorted."""
    found: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for path in packaged_files(folder):
        kind = "SCRIPTS" if path.suffix == ".py" else "RESOURCES"
        found[kind].append(path.relative_to(folder).as_posix())
    return found


def render(text: str, folder: Path) -> str:
    """``text`` with each marked block replaced by the current file list."""
    found = files_on_disk(folder)

    def replace(match: re.Match[str]) -> str:
        indent = match["indent"]
        body = "".join(f"{indent}{name}\n" for name in found[match["kind"]])
        return match["begin"] + body + match["end"]

    return _BLOCK.sub(replace, text)


def update(root: Path = ROOT, check: bool = False) -> list[Path]:
    """Rewrite (or, with ``check``, only compare) every marked CMakeLists.txt; returns those out of date."""
    stale: list[Path] = []
    for name in PACKAGE_DIRS:
        cmake_file = root / name / "CMakeLists.txt"
        if not cmake_file.is_file():
            continue
        text = cmake_file.read_text(encoding="utf-8")
        if not _BLOCK.search(text):
            continue
        new_text = render(text, cmake_file.parent)
        if new_text != text:
            stale.append(cmake_file)
            if not check:
                tmp = cmake_file.with_suffix(".txt.tmp")
                tmp.write_text(new_text, encoding="utf-8")
                tmp.replace(cmake_file)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a list is out of date")
    args = parser.parse_args(argv)
    stale = update(check=args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'updated'}: {path.relative_to(ROOT)}")
    if not stale:
        print("CMake file lists are up to date.")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
