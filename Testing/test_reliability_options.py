"""Invalid method options are refused before the model loads (explain) and once, up front (cohort-explain).

The allowed ranges come from the method registry (``attribution/registry.py``); these tests only check *when*
and *how* the refusal happens: one named line, exit 2, no model loaded, nothing written.
"""
from __future__ import annotations

import pytest

from XAIExplainerLib.cli import main
from XAIExplainerLib.models import SegmentationModel
from XAIExplainerLib.volume import write_volume

from test_agg2exp_pipeline import phantom, save_tiny_torchscript

BAD = [
    ("smoothgrad", ["--samples", "0"], "n_samples"),
    ("smoothgrad", ["--samples", "-3"], "n_samples"),
    ("integrated_gradients", ["--samples", "-1"], "n_steps"),
    ("smoothgrad", ["--noise-level", "0"], "noise_level"),
    ("smoothgrad", ["--noise-level", "-0.2"], "noise_level"),
    ("integrated_gradients", ["--rule", "simpson"], "rule"),
    ("smoothgrad", ["--param", "n_samples=0"], "n_samples"),
    ("vanilla_gradient", ["--param", "n_sample=3"], "n_sample"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    save_tiny_torchscript(root)
    for name in ("a", "b"):
        write_volume(phantom(), root / f"{name}.nii.gz")
    return root


@pytest.fixture
def no_model_load(monkeypatch):
    monkeypatch.setattr(SegmentationModel, "load", classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))


@pytest.mark.parametrize("method,extra,option", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_explain_refuses_bad_options_before_the_model_loads(files, capsys, no_model_load, method, extra, option):
    out = files / "expl"
    code = main(["explain", "--input", str(files / "a.nii.gz"), "--model", str(files / "tiny.pt"),
                 "--method", method, *extra, "--device", "cpu", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and option in err
    assert not out.exists()


@pytest.mark.parametrize("method,extra,option", BAD[:6], ids=[" ".join(b[1]) for b in BAD[:6]])
def test_cohort_explain_refuses_bad_options_once_up_front(files, capsys, no_model_load, method, extra, option):
    out = files / "cohort"
    code = main(["cohort-explain", "--inputs", str(files / "a.nii.gz"), str(files / "b.nii.gz"), "--model",
                 str(files / "tiny.pt"), "--method", method, *extra, "--device", "cpu", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and option in captured.err
    assert "FAILED" not in captured.out and not out.exists()  # not one failure per scan: no scan started


def test_the_python_api_of_a_cohort_refuses_them_too(files):
    from XAIExplainerLib.cohort.run import explain_cohort
    from XAIExplainerLib.errors import MethodParameterError

    with pytest.raises(MethodParameterError, match="noise_level"):
        explain_cohort([files / "a.nii.gz"], files / "tiny.pt", files / "api", method="smoothgrad",
                       method_params={"noise_level": 0.0}, device="cpu")
    assert not (files / "api").exists()
