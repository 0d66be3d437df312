"""Packaging: CMake lists name every shipped file, the core library stays Slicer-free and light, and the
repository's entry points (console script, `make demo` / `make test`, CI) are wired up.

An extension whose CMakeLists.txt forgets a file installs without it and breaks only on a user's machine, so the
lists are compared with the files on disk, and the CMake files are configured, built and installed with a stub
of Slicer's CMake API to check that the installed package really imports.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from update_cmake_lists import files_on_disk, packaged_files, update

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("XAIExplainer", "XAIExplainerLib")


# ---- reading CMake lists -------------------------------------------------------------------------------------
_COMMAND = re.compile(r"\b(set|list|slicer_add_python_unittest)\s*\((.*?)\)", re.IGNORECASE | re.DOTALL)
_VAR = re.compile(r"\$\{(\w+)\}")


def _strip_comments(text: str) -> str:
    return "\n".join(re.sub(r'#(?=(?:[^"]*"[^"]*")*[^"]*$).*', "", line) for line in text.splitlines())


def listed_files(cmake_file: Path, inherited: dict[str, str] | None = None) -> set[str]:
    """Files a scripted-module/library CMakeLists.txt names in its ``*SCRIPTS`` / ``*RESOURCES`` lists (and
    unit-test ``SCRIPT``s), as POSIX paths relative to that file's folder, ``.py`` appended where CMake would.

    ``inherited`` holds the parent directory's variables (``MODULE_NAME``), which CMake passes to subdirectories.
    """
    return _parse(cmake_file, inherited)[0]


def _parse(cmake_file: Path, inherited: dict[str, str] | None = None) -> tuple[set[str], dict[str, str]]:
    scalars: dict[str, str] = dict(inherited or {})
    lists: dict[str, list[str]] = {}

    def expand(arg: str) -> list[str]:
        arg = arg.strip('"')
        whole = _VAR.fullmatch(arg)
        if whole and whole[1] in lists:
            return list(lists[whole[1]])
        return [_VAR.sub(lambda m: scalars.get(m[1], m[0]), arg)] if arg else []

    for command, body in _COMMAND.findall(_strip_comments(cmake_file.read_text(encoding="utf-8"))):
        args = [a for raw in re.findall(r'"[^"]*"|\S+', body) for a in expand(raw)]
        command = command.lower()
        if command == "set" and args:
            name, values = args[0], args[1:]
            if re.search(r"(SCRIPTS|RESOURCES)$", name):
                lists[name] = [v for v in values if v.upper() not in {"CACHE", "PARENT_SCOPE"}]
            elif len(values) == 1:
                scalars[name] = values[0]
        elif command == "list" and len(args) >= 2 and args[0].upper() == "APPEND":
            if re.search(r"(SCRIPTS|RESOURCES)$", args[1]):
                lists.setdefault(args[1], []).extend(args[2:])
        elif command == "slicer_add_python_unittest" and "SCRIPT" in args:
            lists.setdefault("UNITTEST_SCRIPTS", []).append(args[args.index("SCRIPT") + 1])

    files: set[str] = set()
    for name, values in lists.items():
        for value in values:
            if "${" in value:
                raise AssertionError(f"{cmake_file}: cannot resolve '{value}' in {name}; list plain paths.")
            if name.endswith("SCRIPTS") and not Path(value).suffix.startswith(".py"):
                value += ".py"  # ctkMacroCompilePythonScript appends .py to extension-less script names
            files.add(Path(value).as_posix())
    return files, scalars


def listed_files_under(folder: Path) -> set[str]:
    """Everything the CMakeLists.txt files under ``folder`` list, relative to ``folder`` (variables flow down)."""
    scopes: dict[Path, dict[str, str]] = {}
    listed: set[str] = set()
    for cmake_file in sorted(folder.rglob("CMakeLists.txt"), key=lambda p: len(p.parts)):
        parent = next((scopes[d] for d in cmake_file.parent.parents if d in scopes), {})
        files, scopes[cmake_file.parent] = _parse(cmake_file, parent)
        base = cmake_file.parent.relative_to(folder)
        listed |= {(base / f).as_posix() for f in files}
    return listed


def test_listed_files_parser_on_a_slicer_template(tmp_path):
    # The shape of Slicer's scripted-module template, so the check also reads the module's CMakeLists.txt.
    cmake = tmp_path / "CMakeLists.txt"
    cmake.write_text(textwrap.dedent("""
        set(MODULE_NAME Foo)
        set(MODULE_PYTHON_SCRIPTS
          ${MODULE_NAME}.py  # the module
          FooLib/__init__
          )
        list(APPEND MODULE_PYTHON_SCRIPTS "FooLib/extra.py")
        set(MODULE_PYTHON_RESOURCES
          Resources/Icons/${MODULE_NAME}.png
          Resources/UI/${MODULE_NAME}.ui
          )
        slicerMacroBuildScriptedModule(NAME ${MODULE_NAME} SCRIPTS ${MODULE_PYTHON_SCRIPTS})
        """))
    assert listed_files(cmake) == {
        "Foo.py", "FooLib/__init__.py", "FooLib/extra.py", "Resources/Icons/Foo.png", "Resources/UI/Foo.ui",
    }


# ---- (a) every shipped file is listed, every listed file exists -----------------------------------------------
@pytest.mark.parametrize("package", PACKAGE_DIRS)
def test_cmake_lists_match_files_on_disk(package):
    folder = ROOT / package
    cmake_files = sorted(folder.rglob("CMakeLists.txt"))
    assert (folder / "CMakeLists.txt").is_file(), (
        f"{package}/CMakeLists.txt does not exist: the top-level CMakeLists.txt adds {package} with "
        f"add_subdirectory, so the extension cannot be configured, and nothing under {package}/ would be installed."
    )
    listed = listed_files_under(folder)
    on_disk = {p.relative_to(folder).as_posix() for p in packaged_files(folder)}
    unlisted = sorted(on_disk - listed)
    nonexistent = sorted(listed - on_disk)
    problems = []
    if unlisted:
        problems.append(f"not in any CMake list (they would be missing from the installed extension): {unlisted}")
    if nonexistent:
        problems.append(f"listed but not on disk (the CMake configure step would fail): {nonexistent}")
    assert not problems, (
        f"{package}/: " + "; ".join(problems) + " — run `make cmake-lists` (Testing/update_cmake_lists.py) "
        f"or edit {', '.join(str(c.relative_to(ROOT)) for c in cmake_files)}."
    )


def test_update_cmake_lists_rewrites_only_between_markers(tmp_path):
    lib = tmp_path / "XAIExplainerLib"
    (lib / "sub" / "__pycache__").mkdir(parents=True)
    (lib / "Resources").mkdir()
    for name in ("__init__.py", "sub/__init__.py", "sub/mod.py", "sub/__pycache__/mod.cpython-311.pyc",
                 "Resources/table.json", ".hidden.py"):
        (lib / name).write_text("x = 1\n")
    header = "# keep me\nset(LIB_PYTHON_SCRIPTS\n"
    (lib / "CMakeLists.txt").write_text(
        header + "  # BEGIN GENERATED SCRIPTS (tool)\n  old.py\n  # END GENERATED SCRIPTS\n  )\n"
        "set(LIB_PYTHON_RESOURCES\n  # BEGIN GENERATED RESOURCES\n  # END GENERATED RESOURCES\n  )\n"
    )
    assert update(tmp_path, check=True) == [lib / "CMakeLists.txt"]  # --check reports, changes nothing
    assert "old.py" in (lib / "CMakeLists.txt").read_text()
    assert update(tmp_path) == [lib / "CMakeLists.txt"]
    text = (lib / "CMakeLists.txt").read_text()
    assert text.startswith(header) and "old.py" not in text
    assert listed_files(lib / "CMakeLists.txt") == {"__init__.py", "sub/__init__.py", "sub/mod.py",
                                                    "Resources/table.json"}
    assert update(tmp_path) == []  # idempotent
    assert files_on_disk(lib)["RESOURCES"] == ["Resources/table.json"]


def test_top_level_cmakelists_is_a_slicer_extension():
    text = _strip_comments((ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    for pattern in (
        r"cmake_minimum_required\(VERSION 3\.16\.3", r"project\(XAIExplainer\)",
        r'set\(EXTENSION_CATEGORY "Segmentation"\)', r'set\(EXTENSION_DEPENDS "?PyTorch"?\)',
        r"find_package\(Slicer REQUIRED\)", r"include\(\$\{Slicer_USE_FILE\}\)",
        r"include\(\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\)", r"include\(\$\{Slicer_EXTENSION_CPACK\}\)",
    ):
        assert re.search(pattern, text), f"CMakeLists.txt lacks {pattern}"
    for key in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"', text), f"CMakeLists.txt lacks EXTENSION_{key}"
    subdirs = re.findall(r"add_subdirectory\((\w+)\)", text)
    assert set(subdirs) == set(PACKAGE_DIRS)
    for sub in subdirs:
        assert (ROOT / sub / "CMakeLists.txt").is_file(), f"add_subdirectory({sub}) but {sub}/CMakeLists.txt is missing"


def test_library_cmakelists_installs_the_package_folder():
    """Static check of the install call (the configure test below runs it where cmake and compilers exist)."""
    text = _strip_comments((ROOT / "XAIExplainerLib" / "CMakeLists.txt").read_text(encoding="utf-8"))
    call = re.search(r"ctkMacroCompilePythonScript\((.*?)\)", text, re.DOTALL)
    assert call, "XAIExplainerLib/CMakeLists.txt must install the library with ctkMacroCompilePythonScript"
    args = " ".join(call[1].split())
    for part in ('TARGET_NAME XAIExplainerLib', 'SCRIPTS "${XAIExplainerLib_PYTHON_SCRIPTS}"',
                 'RESOURCES "${XAIExplainerLib_PYTHON_RESOURCES}"',
                 "DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/XAIExplainerLib",
                 "INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"):
        assert part in args, f"ctkMacroCompilePythonScript lacks `{part}`"
    # NO_INSTALL_SUBDIR would install the folder's content, scattering the package's files (its __init__.py
    # included) directly into qt-scripted-modules/ instead of keeping them in XAIExplainerLib/.
    assert "NO_INSTALL_SUBDIR" not in args


# A stand-in for Slicer's CMake API: the same macro signatures and the same copy/install layout as CTK's
# ctkMacroCompilePythonScript and Slicer's slicerMacroBuildScriptedModule, without byte compilation.
_FAKE_SLICER = """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_USE_PYTHONQT ON)
set(BUILD_TESTING ON)
"""
_USE_SLICER = r"""
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
                        "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ctkMacroCompilePythonScript: unknown arguments ${MY_UNPARSED_ARGUMENTS}")
  endif()
  foreach(varname TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT DEFINED MY_${varname})
      message(FATAL_ERROR "${varname} is mandatory")
    endif()
  endforeach()
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  set(_copied)
  foreach(file ${MY_SCRIPTS} ${MY_RESOURCES})
    list(FIND MY_SCRIPTS "${file}" _is_script)
    get_filename_component(file_ext ${file} EXT)
    if(_is_script GREATER -1 AND NOT "${file_ext}" MATCHES "py")
      set(file "${file}.py")
    endif()
    if(NOT EXISTS ${MY_SOURCE_DIR}/${file})
      message(FATAL_ERROR "ctkMacroCompilePythonScript(${MY_TARGET_NAME}): no file ${MY_SOURCE_DIR}/${file}")
    endif()
    add_custom_command(OUTPUT ${MY_DESTINATION_DIR}/${file} DEPENDS ${MY_SOURCE_DIR}/${file}
                       COMMAND ${CMAKE_COMMAND} -E copy ${MY_SOURCE_DIR}/${file} ${MY_DESTINATION_DIR}/${file})
    list(APPEND _copied ${MY_DESTINATION_DIR}/${file})
  endforeach()
  add_custom_target(Copy${MY_TARGET_NAME}PythonFiles ALL DEPENDS ${_copied})
  set(_dir ${MY_DESTINATION_DIR})
  if(MY_NO_INSTALL_SUBDIR)
    set(_dir ${MY_DESTINATION_DIR}/)
  endif()
  install(DIRECTORY "${_dir}" DESTINATION "${MY_INSTALL_DIR}" USE_SOURCE_PERMISSIONS)
endmacro()

macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: unknown arguments ${MY_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  set(_opt NO_INSTALL_SUBDIR)
  set(_sub "")
  if(MY_SLICER_WITH_SUBDIR)
    get_filename_component(_sub ${CMAKE_CURRENT_SOURCE_DIR} NAME)
    set(_sub "/${_sub}")
    set(_opt "")
  endif()
  ctkMacroCompilePythonScript(TARGET_NAME ${MY_SLICER_NAME} SCRIPTS "${MY_SLICER_SCRIPTS}"
    RESOURCES "${MY_SLICER_RESOURCES}"
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}${_sub}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR} ${_opt})
endmacro()

macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT})
    message(FATAL_ERROR "slicer_add_python_unittest: no file ${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
  endif()
endmacro()
"""


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("cmake", "make", "cc", "c++")),
                    reason="needs cmake, make and a C/C++ compiler (project() enables C and CXX)")
def test_extension_configures_builds_and_installs_an_importable_library(tmp_path):
    fake = tmp_path / "fake-slicer"
    fake.mkdir()
    (fake / "SlicerConfig.cmake").write_text(_FAKE_SLICER)
    (fake / "UseSlicer.cmake").write_text(_USE_SLICER)
    (fake / "Empty.cmake").write_text("")
    build, prefix = tmp_path / "build", tmp_path / "install"
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "1"}

    def run(*cmd: str) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    run("cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={fake}", "-G", "Unix Makefiles")
    run("cmake", "--build", str(build))
    run("cmake", "--install", str(build), "--prefix", str(prefix))

    installed = prefix / "lib/Slicer-5.8/qt-scripted-modules"
    lib = ROOT / "XAIExplainerLib"
    expected = {p.relative_to(lib).as_posix() for p in packaged_files(lib)}
    got = {p.relative_to(installed / "XAIExplainerLib").as_posix()
           for p in (installed / "XAIExplainerLib").rglob("*") if p.is_file()}
    assert expected <= got, f"not installed: {sorted(expected - got)}"
    assert not (installed / "__init__.py").exists(), "the library's files must stay inside XAIExplainerLib/"
    # The scripted module's own files sit directly in qt-scripted-modules/, where Slicer looks for modules.
    module_files = listed_files(ROOT / "XAIExplainer" / "CMakeLists.txt")
    assert "XAIExplainer.py" in module_files
    missing = sorted(f for f in module_files if not (installed / f).is_file())
    assert not missing, f"module files not installed: {missing}"
    # The installed copy imports on its own (as in Slicer, where qt-scripted-modules is on sys.path).
    code = "import XAIExplainerLib, XAIExplainerLib.datasets.phantom as p; print(XAIExplainerLib.__file__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(installed)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == (installed / "XAIExplainerLib/__init__.py").resolve()


# ---- (b) the core library never imports Slicer, Qt or VTK; `import XAIExplainerLib` stays light ---------------
_PURITY_CHECK = """
import importlib, json, pkgutil, sys
import XAIExplainerLib
# pkgutil.walk_packages imports every package it descends into, so slicer_bridge is pruned before descending.
names, todo = [], [("XAIExplainerLib.", XAIExplainerLib.__path__)]
while todo:
    prefix, path = todo.pop()
    for info in pkgutil.iter_modules(path, prefix):
        if info.name.endswith((".slicer_bridge", ".__main__")):
            continue
        module = importlib.import_module(info.name)
        names.append(info.name)
        if info.ispkg:
            todo.append((info.name + ".", module.__path__))
names.sort()
banned = sorted(m for m in sys.modules if m.split(".")[0] in {"slicer", "qt", "vtk", "vtkmodules", "PythonQt"})
print(json.dumps({"imported": names, "banned": banned}))
"""


def _run_python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, f"the subprocess failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_core_library_imports_no_slicer_qt_or_vtk():
    result = _run_python(_PURITY_CHECK)
    core = {p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
            for p in packaged_files(ROOT / "XAIExplainerLib") if p.suffix == ".py" and "slicer_bridge" not in p.parts}
    core = {m for m in core if not m.endswith("__main__")} - {"XAIExplainerLib"}  # __main__ modules run the CLI
    assert core <= set(result["imported"]), f"not imported by the walk: {sorted(core - set(result['imported']))}"
    assert result["banned"] == [], f"the core library imported {result['banned']} (only slicer_bridge may)"


def test_importing_the_package_does_not_import_torch():
    result = _run_python(
        "import json, sys, XAIExplainerLib\n"
        "print(json.dumps({'heavy': sorted(m for m in ('torch', 'monai', 'slicer', 'vtk') if m in sys.modules)}))"
    )
    assert result["heavy"] == [], f"`import XAIExplainerLib` imported {result['heavy']}; import them lazily"


# ---- (c) console script, (d) the README's two commands and CI ---------------------------------------------------
def test_console_script_points_at_a_callable():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # Python 3.10: read the one line of the [project.scripts] table
        section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
        target = re.search(r'^xai-explainer\s*=\s*"([^"]+)"', section, re.MULTILINE)[1]
    else:
        target = tomllib.loads(text)["project"]["scripts"]["xai-explainer"]
    module_name, _, attribute = target.partition(":")
    assert module_name.startswith("XAIExplainerLib") and attribute, target
    entry = importlib.import_module(module_name)
    for part in attribute.split("."):
        entry = getattr(entry, part)
    assert callable(entry), f"{target} is not callable"


def test_ci_runs_make_test_and_readme_gives_the_two_commands():
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK), ".ci/run must be executable"
    ci_commands = [line.strip() for line in ci.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in ci_commands, f".ci/run does not call `make test`: {ci_commands}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in ("make demo", "make test"):
        assert re.search(rf"^\s*{command}\b", readme, re.MULTILINE), f"README.md does not show `{command}` as a command"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test", "cmake-lists"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile has no `{target}` target"
