"""The checks Slicer's ExtensionsIndex runs on a new extension (scripts/check_description_files.py), offline.

The index's CI clones the repository and checks the description JSON and the top-level CMakeLists.txt: an
accepted category, an https/git scm_url whose repository name contains "Slicer", a project() name equal to the
description file's name, an http(s) EXTENSION_ICONURL, EXTENSION_SCREENSHOTURLS as ONE quoted space-separated
string of http(s) URLs, and a licence file in the repository root. The rules below restate that script (the
accepted-category list is copied from it); the parts that need the network (JSON schema download, fetching the
images) are replaced by checks that the URLs point at files that exist in this repository. Also checked: one
owner placeholder used in every URL, and the module help / contributor conventions Slicer's reviewers ask for.
"""
from __future__ import annotations

import ast
import json
import re
import urllib.parse as urlparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTION = ROOT / "Resources" / "XAIExplainer.json"
CMAKE = ROOT / "CMakeLists.txt"
OWNER_PLACEHOLDER = "REPLACE-WITH-OWNER"
RAW_PREFIX = f"https://raw.githubusercontent.com/{OWNER_PLACEHOLDER}/SlicerXAIExplainer/main/"

#: From Slicer/ExtensionsIndex scripts/check_description_files.py (ACCEPTED_EXTENSION_CATEGORIES).
ACCEPTED_EXTENSION_CATEGORIES = (
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda",
    "Converters", "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation",
    "Filtering", "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "IGT", "Informatics",
    "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology",
    "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy", "Registration",
    "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis", "Shape Regression",
    "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging", "Supervisely",
    "Surface Models", "SurfaceLearner", "Tomographic Reconstruction", "Tracking", "Tractography", "Training",
    "Ultrasound", "Utilities", "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools", "Web System Tools",
    "Wizards",
)
LICENSE_FILE_NAMES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")


def _metadata() -> dict:
    return json.loads(DESCRIPTION.read_text())


def _cmake() -> str:
    return CMAKE.read_text(encoding="utf-8")


def test_description_keys_category_and_scm_url():
    metadata = _metadata()
    assert metadata.get("$schema", "").startswith("https://raw.githubusercontent.com/Slicer/Slicer/")
    assert metadata["category"] in ACCEPTED_EXTENSION_CATEGORIES  # check_category
    scm = metadata["scm_url"]
    assert "://" in scm and urlparse.urlsplit(scm).scheme in ("git", "https")  # check_scm_url_syntax
    repo_name = Path(urlparse.urlsplit(scm).path).stem
    assert "slicer" in repo_name.lower()  # check_git_repository_name
    assert metadata["scm_revision"] and metadata["build_dependencies"] == ["PyTorch"]


def test_cmakelists_content_as_the_index_parses_it():
    """check_cmakelists_content's own regular expressions, applied to our CMakeLists.txt."""
    cmake = _cmake()
    project = re.findall(r'project\s*\(\s*([^\s\)\n\r]+)', cmake, re.IGNORECASE | re.MULTILINE)
    assert project and project[0].strip('"\'') == DESCRIPTION.stem
    icons = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', cmake, re.IGNORECASE | re.MULTILINE)
    assert icons and icons[0].startswith("http")
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', cmake, re.IGNORECASE | re.MULTILINE)
    assert shots, "EXTENSION_SCREENSHOTURLS must be ONE quoted, space-separated string"
    urls = shots[0].split()
    assert len(urls) >= 1 and all(u.startswith("http") for u in urls)
    for url in [icons[0], *urls]:  # offline stand-in for validate_image_url: the image is in this repository
        assert url.startswith(RAW_PREFIX), url
        local = ROOT / url[len(RAW_PREFIX):]
        assert local.is_file() and local.suffix == ".png" and local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", url


def test_category_is_the_same_in_cmake_and_description():
    category = re.search(r'set\(EXTENSION_CATEGORY "([^"]+)"\)', _cmake())[1]
    assert category == _metadata()["category"] in ACCEPTED_EXTENSION_CATEGORIES


def test_license_file_matches_pyproject():
    found = [name for name in LICENSE_FILE_NAMES if (ROOT / name).is_file()]
    assert found, "no licence file in the repository root (check_license_file)"
    text = (ROOT / found[0]).read_text()
    assert "Apache License" in text and "Version 2.0" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()


def test_one_owner_placeholder_used_everywhere():
    """Homepage, icon, screenshots, scm_url and the module's documentation link name the same repository."""
    cmake = _cmake()
    urls = re.findall(r'"(https?://[^"\s]+)', cmake) + re.findall(r"https?://\S+", re.search(
        r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"', cmake)[1]) + [_metadata()["scm_url"]]
    module = (ROOT / "XAIExplainer" / "XAIExplainer.py").read_text()
    urls.append(re.search(r'DOCUMENTATION_URL = "([^"]+)"', module)[1])
    repos = {re.search(r"(?:github\.com|githubusercontent\.com)/([^/]+/[^/#]+)", u)[1] for u in urls
             if "github" in u}
    assert repos == {f"{OWNER_PLACEHOLDER}/SlicerXAIExplainer"}, repos


def _module_init() -> str:
    tree = ast.parse((ROOT / "XAIExplainer" / "XAIExplainer.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "XAIExplainer")
    return ast.unparse(cls)


def test_module_help_links_documentation_and_says_not_for_clinical_use():
    init = _module_init()
    assert "DOCUMENTATION_URL" in init and "<a href" in init
    assert "not for clinical use" in init.lower()


def test_contributors_are_name_and_organisation():
    pattern = re.compile(r"^[^()]+ \([^()]+\)$")
    cmake_contributors = re.search(r'set\(EXTENSION_CONTRIBUTORS "([^"]+)"\)', _cmake())[1]
    assert all(pattern.match(c.strip()) for c in cmake_contributors.split(","))
    module = re.search(r"contributors = \[(.*?)\]", _module_init())[1]
    assert all(pattern.match(ast.literal_eval(c.strip())) for c in module.split(",") if c.strip())


def test_module_cmakelists_registers_the_python_unittest():
    text = (ROOT / "XAIExplainer" / "CMakeLists.txt").read_text()
    assert re.search(r"if\(BUILD_TESTING\)\s*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)


def test_run_test_tears_down_after_every_test():
    tree = ast.parse((ROOT / "XAIExplainer" / "XAIExplainer.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "XAIExplainerTest")
    run = ast.unparse(next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "runTest"))
    assert "self.setUp()" in run and "finally" in run and "self.tearDown()" in run
    teardown = ast.unparse(next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "tearDown"))
    assert "mrmlScene.Clear" in teardown and "rmtree" in teardown
