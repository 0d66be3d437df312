"""``xai-explainer report`` on real folders of three products (Image-Reg-LIME, Agg2Exp, IBIX) written by their CLIs:
grouping by input content, Δ and rΔ known answers, pictures that decode, bad input refused with one line and nothing
written, and the page itself driven in a real headless Chromium (filters, views, images, console, offline copy)."""
from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from XAIExplainerLib.cli.main import main
from XAIExplainerLib.errors import OutputExistsError, OutputPathError, ReportInputError
from XAIExplainerLib.models import ModelConfig
from XAIExplainerLib.models.network import build_network
from XAIExplainerLib.pipelines.report import build_report, report_data
from XAIExplainerLib.pipelines.report_folders import deltas, read_report_inputs
from XAIExplainerLib.pipelines.report_images import png_data_uri, slice_panels
from XAIExplainerLib.volume import Volume, read_volume, write_volume

from test_agg2exp_pipeline import phantom, save_tiny_torchscript

SHAPE = (8, 8, 8)
NAMES = ["defocus", "astig_v", "astig_o"]
CHROMIUM = "/usr/bin/chromium"


class Smooth(torch.nn.Module):
    """An image-to-image network for IBIX: a fixed 3x3x3 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = torch.nn.Parameter(torch.randn(1, 1, 3, 3, 3, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return torch.nn.functional.conv3d(x, self.kernel, padding=1)


def _image_to_image(root: Path) -> tuple[Path, Path]:
    weights, config = root / "conv.pt", root / "conv.json"
    torch.jit.script(Smooth()).save(str(weights))
    config.write_text(json.dumps({"kind": "image_to_image", "channel_names": ["out"], "preprocessing": [],
                                  "axis_order": "zyx", "modality": "MRI"}))
    return weights, config


def _run(argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


def _regression_inputs(root: Path) -> None:
    torch.manual_seed(0)
    config = ModelConfig(kind="regression", target_names=NAMES, architecture="Regressor", preprocessing=[],
                         network_kwargs={"in_shape": [1, *SHAPE], "out_shape": [3], "channels": [2, 4],
                                         "strides": [2, 2]})
    torch.save(build_network(config).state_dict(), root / "w.pt")
    config.save(root / "w.json")
    for i in range(2):
        data = np.random.default_rng(i).uniform(0.5, 1.5, SHAPE).astype(np.float32)
        write_volume(Volume(data, spacing=(1.0, 1.0, 2.0)), root / f"in{i}.nii.gz")


def _lime(root: Path, case: str, out: str, *extra) -> Path:
    _run(["lime", "--input", root / f"{case}.nii.gz", "--model", root / "w.pt", "--supervoxels", "cubes",
          "--n-segments", "8", "--samples", "20", "--output", root / out, *extra])
    return root / out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Regression (3 targets): in0 with LIME at two kernel widths, Grad-CAM++ and SmoothGrad (the thesis' σ = 0.2),
    in1 with LIME; 4 Agg2Exp maps (2 methods × 2 classes of a CT phantom); 1 IBIX backward map: 20 maps of 4 cases,
    every folder written by its CLI."""
    root = tmp_path_factory.mktemp("report")
    _regression_inputs(root)
    out = [_lime(root, "in0", "lime0"), _lime(root, "in0", "lime0k", "--kernel-width", "0.5"),
           _lime(root, "in1", "lime1")]
    save_tiny_torchscript(root)
    write_volume(phantom(), root / "ct.nii.gz")
    for method, extra in (("vanilla_gradient", []), ("smoothgrad", ["--samples", "2"])):
        out.append(root / f"agg_{method}")
        _run(["explain", "--input", root / "ct.nii.gz", "--model", root / "tiny.pt", "--method", method, *extra,
              "--classes", "bone", "soft", "--device", "cpu", "--output", out[-1]])
    image = Volume(np.random.default_rng(0).normal(size=(10, 10, 10)).astype(np.float32))
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[3:6, 3:6, 3:6] = 1
    write_volume(image, root / "ib.nii.gz")
    write_volume(image.with_array(mask), root / "mask.nii.gz")
    weights, config = _image_to_image(root)
    out.append(root / "ibix")
    _run(["ibix", "--input", root / "ib.nii.gz", "--model", weights, "--config", config, "--mask",
          root / "mask.nii.gz", "--mode", "backward", "--exact", "--device", "cpu", "--output", out[-1]])
    out += [root / "cam0", root / "smoothgrad0"]
    common = ["--input", root / "in0.nii.gz", "--model", root / "w.pt", "--device", "cpu"]
    _run(["cam", *common, "--method", "gradcampp", "--output", out[-2]])
    _run(["explain-regression", *common, "--settings", "thesis-0.2", "--samples", "4", "--output", out[-1]])
    return root, out


def _prediction(folder: Path, target: str) -> float:
    return json.loads((folder / "provenance.json").read_text())["predictions"][target]


@pytest.fixture(scope="module")
def truth_csv(folders):
    """Ground truth chosen for known answers: Δ = +0.5 (in0 defocus), rΔ = +50 % (in0 astig_v), Δ = −0.01
    (in1 defocus), y = 0 so rΔ undefined (in1 astig_o)."""
    root, out = folders
    p0 = {t: _prediction(out[0], t) for t in NAMES}
    p1 = {t: _prediction(out[2], t) for t in NAMES}
    rows = [("in0", "defocus", p0["defocus"] - 0.5), ("in0", "astig_v", p0["astig_v"] / 1.5),
            ("in1.nii.gz", "defocus", p1["defocus"] + 0.01), ("in1", "astig_o", 0.0)]
    path = root / "truth.csv"
    path.write_text("case,target,value\n" + "".join(f"{c},{t},{v!r}\n" for c, t, v in rows))
    return path


@pytest.fixture(scope="module")
def report(folders, truth_csv, tmp_path_factory):
    root, out = folders
    page = tmp_path_factory.mktemp("page") / "report.html"
    _run(["report", "--inputs", *out, "--ground-truth", truth_csv, "--output", page])
    return page


def _page_data(page: Path) -> dict:
    text = page.read_text()
    start = text.index('id="report-data">') + len('id="report-data">')
    data = json.loads(text[start:text.index("</script>", start)])
    for e in data["entries"]:
        e["case_name"] = data["cases"][e["case"]]["name"]
    return data


# ---- the data behind the page -------------------------------------------------------------------------------------
def test_deltas_are_the_theses_definitions():
    assert deltas(3.0, 2.0) == (1.0, 50.0)
    assert deltas(1.5, 2.0) == (-0.5, -25.0)
    assert deltas(1.0, 0.0) == (1.0, None)  # rΔ undefined for y = 0
    assert deltas(None, 2.0) == (None, None) and deltas(2.0, None) == (None, None)


def test_cases_group_by_input_content_and_method_variants_are_named_by_their_setting(folders, truth_csv):
    root, out = folders
    cases = {c.name: c for c in read_report_inputs(out, truth_csv)}
    assert sorted(cases) == ["ct", "ib", "in0", "in1"]
    methods = {c: sorted({e.method for e in case.entries}) for c, case in cases.items()}
    assert methods["in0"] == ["gradcampp", "image_reg_lime (kernel_width=0.25)", "image_reg_lime (kernel_width=0.5)",
                              "smoothgrad"]
    assert methods["in1"] == ["image_reg_lime (kernel_width=0.25)"]  # the same label on every case
    assert methods["ct"] == ["smoothgrad", "vanilla_gradient"] and methods["ib"] == ["ibix-backward"]
    assert sorted(e.target for e in cases["ct"].entries) == ["bone", "bone", "soft", "soft"]
    for entry in cases["in0"].entries:  # every method's folder records the same prediction ŷ of the same input
        if entry.target == "defocus":
            assert deltas(entry.prediction, entry.truth)[0] == pytest.approx(0.5)
        if entry.target == "astig_v":
            assert deltas(entry.prediction, entry.truth)[1] == pytest.approx(50.0)


def test_page_data_has_one_entry_per_map_with_pictures_that_decode(report, folders):
    from PIL import Image

    data = _page_data(report)
    assert len(data["entries"]) == 20 and len(data["cases"]) == 4
    assert data["targets"][:3] == NAMES and "ibix-backward" in data["methods"]
    by_case = {c["name"]: c for c in data["cases"]}
    # every input file is still there, unchanged: each case and target has its input picture
    assert all(all(c["underlays"].values()) and not c["note"] for c in data["cases"])
    for e in data["entries"]:
        case = data["cases"][e["case"]]
        over = Image.open(io.BytesIO(base64.b64decode(e["img"].split(",", 1)[1])))
        under = Image.open(io.BytesIO(base64.b64decode(case["underlays"][e["target"]].split(",", 1)[1])))
        assert over.size == under.size and over.mode == "RGBA"  # the overlay sits exactly on the input
    # in0 (8 x 8 x 8 voxels of 1 x 1 x 2 mm): axial 8 x 8, coronal and sagittal 16 x 8 (square pixels), 2 px gaps
    in0 = by_case["in0"]
    size = Image.open(io.BytesIO(base64.b64decode(in0["underlays"]["defocus"].split(",", 1)[1]))).size
    assert size == (8 + 2 + 8 + 2 + 8, 16)
    rdelta = [e["rdelta"] for e in data["entries"] if e["target"] == "astig_o" and by_case["in1"] is
              data["cases"][e["case"]]]
    assert rdelta == [None]  # y = 0


def test_names_cannot_end_the_data_block_or_script_the_page():
    from XAIExplainerLib.pipelines.report_page import page_html

    evil = "</script><script>alert(1)</script>"
    html = page_html({"title": evil, "created": "", "cases": [], "entries": [], "methods": [], "targets": [evil]})
    assert html.count("</script>") == 2 and "<script>alert" not in html  # the skeleton's two blocks only
    start = html.index('id="report-data">') + len('id="report-data">')
    assert json.loads(html[start:html.index("</script>", start)])["targets"] == [evil]


def test_png_encoder_round_trips_exactly():
    from PIL import Image

    rgba = np.random.default_rng(0).integers(0, 256, (7, 5, 4), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(png_data_uri(rgba).split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, rgba)


def test_slice_panels_show_the_three_planes_through_the_point():
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    out = slice_panels(array, (1, 2, 3), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(out[:5, :6], array[1])
    np.testing.assert_array_equal(out[:4, 8:14], array[::-1, 2, :])  # superior at the top
    np.testing.assert_array_equal(out[:4, 16:21], array[::-1, :, 3])
    assert np.isnan(out[:, 6:8]).all() and np.isnan(out[4:, 8:]).all()
    flat = slice_panels(np.ones((1, 5, 6), np.float32), (0, 2, 3), (1.0, 1.0, 1.0))
    assert flat.shape == (5, 6)  # a 2D image: one panel, no one-pixel-thick planes


def test_non_finite_voxels_are_counted_and_shown_as_zero():
    from XAIExplainerLib.pipelines.report_images import case_images

    heat = np.zeros((4, 4, 4), np.float32)
    heat[1, 2, 3] = 2.0
    heat[0, 0, 0] = np.nan
    images = case_images([Volume(heat), Volume(np.zeros((4, 4, 4), np.float32))], ["a", "b"], None)
    assert images.centers["a"] == (1, 2, 3) and images.underlays == {"a": None, "b": None}  # finite values' peak
    first, blank = images.maps
    assert first["nonfinite"] == 1 and first["vmax"] == 2.0 and first["vmin"] == 0.0 and not first["signed"]
    assert blank["blank"] and blank["nonfinite"] == 0
    json.dumps(images.maps, allow_nan=False)  # the page's JSON holds no NaN


def test_methods_of_one_target_share_their_slices_and_each_target_gets_its_own():
    from XAIExplainerLib.pipelines.report_images import case_images

    def spike(at, value=1.0):
        heat = np.zeros((6, 6, 6), np.float32)
        heat[at] = value
        return Volume(heat)

    image = Volume(np.random.default_rng(0).normal(size=(6, 6, 6)).astype(np.float32))
    # target t: method A peaks at (1,1,1) strongly, method B at (1,1,1) weakly and (4,4,4): the shared point is
    # where both, scaled to their maxima, add up most; target u has its own point
    b = spike((1, 1, 1), 0.6).array.copy()
    b[4, 4, 4] = 1.0
    images = case_images([spike((1, 1, 1)), Volume(b), spike((5, 0, 2))], ["t", "t", "u"], image)
    assert images.centers == {"t": (1, 1, 1), "u": (5, 0, 2)}
    assert images.underlays["t"] != images.underlays["u"]


def test_pictures_do_not_depend_on_how_the_file_orders_its_axes():
    """The same anatomy stored LPS (identity direction) or RAS (flipped x and y, as most NIfTI files) gives the
    same pictures and slice point: everything is shown in one orientation (radiological)."""
    from XAIExplainerLib.pipelines.report_images import case_images
    from XAIExplainerLib.volume import reorient

    rng = np.random.default_rng(3)
    image = Volume(rng.normal(size=(5, 6, 7)).astype(np.float32), spacing=(1.0, 1.5, 2.0), origin=(3.0, -2.0, 1.0))
    heat = image.with_array(rng.normal(size=(5, 6, 7)).astype(np.float32))
    ras_image, ras_heat = reorient(image, "RAS"), reorient(heat, "RAS")
    assert ras_image.direction != image.direction and not np.array_equal(ras_image.array, image.array)
    lps, ras = case_images([heat], ["t"], image), case_images([ras_heat], ["t"], ras_image)
    assert lps.underlays == ras.underlays and lps.maps == ras.maps and lps.points_ras == ras.points_ras


def test_colour_scale_ends_at_a_high_percentile_not_at_one_hot_voxel():
    from XAIExplainerLib.pipelines.report_images import display_top

    values = np.zeros((10, 10, 10), np.float32)
    values[:5] = np.linspace(0.01, 1.0, 500).reshape(5, 10, 10)
    values[9, 9, 9] = 1000.0  # an outlier
    assert display_top(values) == pytest.approx(np.percentile(np.r_[np.linspace(0.01, 1.0, 500), 1000.0], 99.5))
    assert display_top(values) < 10 and display_top(np.zeros((2, 2, 2))) == 0.0


def test_ground_truth_recorded_in_a_folder_is_used(folders, tmp_path):
    root, out = folders
    copy = tmp_path / "lime1_truth"
    shutil.copytree(out[2], copy)
    record = json.loads((copy / "provenance.json").read_text())
    record["ground_truth"] = {"defocus": 2.0}
    (copy / "provenance.json").write_text(json.dumps(record))
    (case,) = read_report_inputs([copy])
    entry = next(e for e in case.entries if e.target == "defocus")
    assert entry.truth == 2.0 and deltas(entry.prediction, entry.truth)[0] == pytest.approx(entry.prediction - 2)


def test_a_missing_or_changed_input_file_leaves_the_maps_alone_with_a_note(folders, tmp_path):
    root, out = folders
    gone, changed = tmp_path / "gone", tmp_path / "changed"
    for folder, source in ((gone, tmp_path / "moved.nii.gz"), (changed, tmp_path / "edited.nii.gz")):
        shutil.copytree(out[2], folder)
        record = json.loads((folder / "provenance.json").read_text())
        record["input"]["source"] = str(source)
        (folder / "provenance.json").write_text(json.dumps(record))
    write_volume(Volume(np.ones(SHAPE, np.float32)), tmp_path / "edited.nii.gz")  # other content, same name
    notes = {c["name"]: c for c in report_data(read_report_inputs([gone])).get("cases")}
    assert notes["moved"]["note"].startswith("input file not found") and not any(notes["moved"]["underlays"].values())
    (case,) = report_data(read_report_inputs([changed]))["cases"]
    assert case["note"].startswith("input file changed") and not any(case["underlays"].values())


def _variant(source: Path, folder: Path, **params) -> Path:
    """A copy of a regression folder whose provenance records other settings (what another run would write)."""
    shutil.copytree(source, folder)
    record = json.loads((folder / "provenance.json").read_text())
    record["params"].update(params)
    (folder / "provenance.json").write_text(json.dumps(record))
    return folder


def test_variants_are_named_by_the_setting_not_by_a_value_derived_per_case(folders, tmp_path):
    """SmoothGrad σ = 0.2 / 0.3 of the range on two cases: σ in intensity units differs on every case, the noise
    level does not; the columns are named by the noise level, two labels for four runs."""
    root, out = folders
    runs = [_variant(out[0], tmp_path / "a", noise_level=0.2, sigma=0.21),
            _variant(out[0], tmp_path / "b", noise_level=0.3, sigma=0.31),
            _variant(out[2], tmp_path / "c", noise_level=0.2, sigma=0.25),
            _variant(out[2], tmp_path / "d", noise_level=0.3, sigma=0.37)]
    labels = {c.name: sorted({e.method for e in c.entries}) for c in read_report_inputs(runs)}
    assert labels == {"in0": ["image_reg_lime (noise_level=0.2)", "image_reg_lime (noise_level=0.3)"],
                      "in1": ["image_reg_lime (noise_level=0.2)", "image_reg_lime (noise_level=0.3)"]}


def test_layer_lists_name_variants_and_a_stated_blank_reason_reaches_the_card(folders, browser, tmp_path):
    """Runs on different layers (LayerCAM's list option) are two methods; a folder's ``maps.json`` blank reason
    (what the regression CAM folders write for an all-negative-weights map) is shown on the card."""
    root, out = folders
    one = _variant(out[2], tmp_path / "one", layers=["conv1"])
    two = _variant(out[2], tmp_path / "two", layers=["conv1", "conv2"])
    zero = read_volume(two / "heatmap_astig_v.nii.gz")
    write_volume(zero.with_array(np.zeros(zero.shape, np.float32)), two / "heatmap_astig_v.nii.gz")
    (two / "maps.json").write_text(json.dumps({"targets": {"astig_v": {
        "blank": True, "blank_reason": "every channel weight is negative"}}}))
    (case,) = read_report_inputs([one, two])
    assert sorted({e.method for e in case.entries}) == ["image_reg_lime (layers=conv1)",
                                                         "image_reg_lime (layers=conv1+conv2)"]
    page = build_report([one, two], tmp_path / "r.html")
    view = Page(browser, page)
    blank = view.page.locator("#view .card[data-target=astig_v]", has_text="conv2")
    assert blank.count() == 1 and "blank map: every value is 0 (every channel weight is negative)" in \
        blank.inner_text()
    assert view.errors == [] and view.images_loaded() == (12, True)


# ---- bad input: one line, exit code 2, nothing written -----------------------------------------------------------
def _tree(*folders: Path) -> set[Path]:
    return {p for f in folders if f.exists() for p in f.rglob("*")}


def _refused(capsys, argv, expect: str, *watched: Path) -> None:
    """One line on stderr with ``expect``, exit code 2, and no file added in the watched folders."""
    before = _tree(*watched)
    capsys.readouterr()  # progress bars of earlier commands
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expect in err[0], err
    assert _tree(*watched) == before


def test_bad_input_is_refused_before_anything_is_written(folders, capsys, tmp_path):
    root, out = folders
    page = tmp_path / "r.html"
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    shutil.copytree(out[2], broken)
    (broken / "heatmap_astig_v.nii.gz").unlink()
    bad_csv = tmp_path / "truth.csv"
    bad_csv.write_text("case,target,value\nin7,defocus,1.0\n")
    cases = [(["report", "--inputs", "--output", page], "No explanation folders given"),
             (["report", "--inputs", empty, "--output", page], "provenance.json is missing"),
             (["report", "--inputs", broken, "--output", page], "heatmap_astig_v.nii.gz is missing"),
             (["report", "--inputs", out[0], out[0], "--output", page], "pass only one of them"),
             (["report", "--inputs", out[0], "--ground-truth", bad_csv, "--output", page], "case 'in7' is none"),
             (["report", "--one-case", "--inputs", *out[:3], "--output", page],
              "explain 2 different inputs (in0: lime0, lime0k; in1: lime1)"),
             (["report", "--inputs", out[0], "--output", tmp_path / "nowhere" / "r.html"], "does not exist"),
             (["report", "--inputs", out[0], "--output", tmp_path / "r.txt"], "must end in .html"),
             (["report", "--inputs", out[0], "--output", out[0] / "r.html"], "lies inside the input")]
    for argv, expect in cases:
        _refused(capsys, argv, expect, tmp_path, out[0])
    assert main([str(a) for a in ["report", "--one-case", "--inputs", *out[:2], "--output", page]]) == 0


def test_one_input_file_with_two_contents_is_not_one_case(folders, capsys, tmp_path):
    """in.nii.gz explained, then changed and explained again: 'Multiple methods' of that case would put maps of
    two different scans side by side under one name."""
    root, _ = folders
    for name in ("w.pt", "w.json"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copy(root / "in0.nii.gz", tmp_path / "in.nii.gz")
    first = _lime(tmp_path, "in", "before")
    shutil.copy(root / "in1.nii.gz", tmp_path / "in.nii.gz")
    second = _lime(tmp_path, "in", "after", "--kernel-width", "0.5")
    page = tmp_path / "r.html"
    _refused(capsys, ["report", "--inputs", first, second, "--output", page], "but of different content", tmp_path)
    with pytest.raises(ReportInputError, match="the file changed between the runs"):
        build_report([first, second], page)


def test_existing_report_needs_overwrite(folders, tmp_path):
    root, out = folders
    page = tmp_path / "r.html"
    page.write_text("keep")
    with pytest.raises(OutputExistsError):
        build_report([out[0]], page)
    assert page.read_text() == "keep"
    with pytest.raises(OutputPathError):
        build_report([out[0]], tmp_path)
    assert build_report([out[0]], page, overwrite=True) == page and "report-data" in page.read_text()


# ---- the page in a real browser ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - `make test` installs it (pyproject's test extra)
        pytest.fail("playwright is not installed; run `make test` (or pip install -e '.[test]').")
    if not Path(CHROMIUM).is_file():  # pragma: no cover - `make test` installs it (Makefile's data target)
        pytest.fail(f"{CHROMIUM} is missing; run `make data` as root or `sudo apt-get install chromium`.")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield instance
        instance.close()


class Page:
    """One opened report: its page, console errors, and requests that went anywhere but the file itself."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page()
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        url = path.absolute().as_uri()

        def route(r):
            if r.request.url != url and not r.request.url.startswith("data:"):
                self.foreign.append(r.request.url)
                return r.abort()
            return r.continue_()

        self.page.route("**/*", route)
        self.page.goto(url)

    def cards(self) -> int:
        return self.page.locator("#view .card").count()

    def groups(self) -> int:
        return self.page.locator("#view section.group").count()

    def images_loaded(self) -> tuple[int, bool]:
        count, loaded = self.page.evaluate("() => [document.images.length, [...document.images].every("
                                           "i => i.complete && i.naturalWidth > 0)]")
        return count, loaded


def _expected(data: dict, targets=None, methods=None, abs_delta=(None, None), rdelta=(None, None),
              truth=(None, None)) -> list[dict]:
    """The filters' meaning, written out independently of the page's script."""
    def within(v, lo, hi):
        if lo is None and hi is None:
            return True
        return v is not None and (lo is None or v >= lo) and (hi is None or v <= hi)

    return [e for e in data["entries"] if (targets is None or e["target"] in targets)
            and (methods is None or e["method"] in methods)
            and within(None if e["delta"] is None else abs(e["delta"]), *abs_delta) and within(e["rdelta"], *rdelta)
            and within(e["truth"], *truth)]


def _names(entries: list[dict]) -> list[str]:
    return sorted(f"{e['case_name']}/{e['target']}" for e in entries)


def _shown(page) -> list[str]:
    return sorted(page.eval_on_selector_all("#view .card", "cs => cs.map(c => c.dataset.case + '/' + "
                                                           "c.dataset.target)"))


def test_every_filter_changes_what_is_shown_as_expected(browser, report):
    data = _page_data(report)
    view = Page(browser, report)
    page = view.page
    assert view.cards() == 20 and view.images_loaded() == (20 + 20, True)  # each card: input + map
    page.uncheck("input.target-filter[value=defocus]")
    assert view.cards() == len(_expected(data, targets=set(data["targets"]) - {"defocus"})) == 15
    page.check("input.target-filter[value=defocus]")
    page.uncheck("input.method-filter[value=vanilla_gradient]")
    assert view.cards() == len(_expected(data, methods=set(data["methods"]) - {"vanilla_gradient"})) == 18
    page.check("input.method-filter[value=vanilla_gradient]")
    page.fill("#abs-delta-max", "0.1")
    expected = _names(_expected(data, abs_delta=(None, 0.1)))
    assert _shown(page) == expected and "in1/defocus" in expected and "in0/defocus" not in expected  # 0.01, 0.5
    page.fill("#abs-delta-max", "")
    page.fill("#abs-delta-min", "0.4")
    expected = _names(_expected(data, abs_delta=(0.4, None)))
    assert _shown(page) == expected and expected.count("in0/defocus") == 4  # Δ = 0.5 under every method of in0
    page.fill("#abs-delta-min", "")
    page.fill("#rdelta-min", "49")
    page.fill("#rdelta-max", "51")
    assert _shown(page) == _names(_expected(data, rdelta=(49, 51))) == ["in0/astig_v"] * 4  # rΔ = 50 %
    page.fill("#rdelta-min", "")
    page.fill("#rdelta-max", "")
    page.fill("#truth-min", "-0.001")
    page.fill("#truth-max", "0.001")
    expected = _names(_expected(data, truth=(-0.001, 0.001)))
    assert _shown(page) == expected and "in1/astig_o" in expected  # y = 0 (its rΔ undefined)
    page.fill("#truth-max", "")
    page.fill("#truth-min", "1")
    assert view.cards() == 0 and page.inner_text("#view") == "No map passes the filters."
    page.fill("#truth-min", "")
    page.fill("#truth-max", "")
    assert view.cards() == 20 and view.images_loaded()[1]
    page.fill("#case-filter", "in")
    assert _shown(page) == _names([e for e in data["entries"] if "in" in e["case_name"]])  # in0, in1: 15 maps
    assert view.cards() == 15
    page.fill("#case-filter", "")
    page.fill("#card-size", "500")
    page.dispatch_event("#card-size", "input")
    assert page.eval_on_selector(".card", "c => c.getBoundingClientRect().width") == pytest.approx(500, abs=1)
    page.fill("#alpha", "0.2")
    page.dispatch_event("#alpha", "input")
    assert page.eval_on_selector("img.over", "i => getComputedStyle(i).opacity") == "0.2"
    assert view.errors == [] and view.foreign == []


def test_the_three_views_group_the_same_maps_as_the_thesis_app(browser, report):
    data = _page_data(report)
    view = Page(browser, report)
    keys = {"single": {(e["method"], e["target"]) for e in data["entries"]},
            "targets": {(e["case"], e["method"]) for e in data["entries"]},
            "methods": {(e["case"], e["target"]) for e in data["entries"]}}
    for name, expected in keys.items():
        view.page.click(f"nav button[data-view={name}]")
        assert view.cards() == 20 and view.groups() == len(expected), name
    # Multiple methods of one case and target: in0's defocus under LIME (two kernel widths), Grad-CAM++ and
    # SmoothGrad side by side, the thesis' comparison
    view.page.click("nav button[data-view=methods]")
    first = view.page.locator("#view section.group").first
    assert first.locator("h2").inner_text() == "in0 · defocus" and first.locator(".card").count() == 4
    assert first.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.method)") == [
        "image_reg_lime (kernel_width=0.25)", "image_reg_lime (kernel_width=0.5)", "gradcampp", "smoothgrad"]
    assert view.errors == [] and view.foreign == [] and view.images_loaded()[1]


def test_a_copy_in_another_folder_works_alone(browser, report, tmp_path):
    copy = tmp_path / "elsewhere" / "copy.html"
    copy.parent.mkdir()
    shutil.copy(report, copy)
    view = Page(browser, copy)
    assert view.cards() == 20 and view.images_loaded() == (40, True)
    assert view.errors == [] and view.foreign == []
