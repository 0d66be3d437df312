"""The method registry: one registration makes a method reachable from the CLI, the pipeline and the GUI list."""
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from XAIExplainerLib.attribution import AttributionResult  # noqa: E402
from XAIExplainerLib.attribution.registry import (  # noqa: E402
    MethodSpec,
    OptionSpec,
    available_methods,
    call_method,
    get_method,
    register_method,
    unregister_method,
)
from XAIExplainerLib.errors import MethodParameterError, UnknownMethodError  # noqa: E402

from test_agg2exp_pipeline import phantom, tiny_model  # noqa: E402

BUILTINS = ["vanilla_gradient", "smoothgrad", "integrated_gradients", "kernel_shap_cubes", "kernel_shap_semantic"]


def scaled_input(model, x, target, *, factor: float = 1.0, device=None, batch_size=None, progress=None, cancel=None):
    """factor · x for every target: a toy attribution whose value says it received the option."""
    start = time.perf_counter()
    maps = (factor * x.detach()[0, 0]).expand(target.num_targets, *x.shape[2:]).float().cpu()
    return AttributionResult(maps.clone(), list(target.names), "toy", {"factor": factor}, n_model_evaluations=0,
                             seconds=time.perf_counter() - start)


@pytest.fixture
def toy():
    spec = register_method(MethodSpec(
        "toy", "Toy scaling", "factor times the input", "none", scaled_input, ("segmentation",),
        (OptionSpec("factor", float, 1.0, "toy scaling factor of the input", minimum=0.0, exclusive_minimum=True,
                    cli_flag="--toy-factor"),), deterministic=True))
    yield spec
    unregister_method("toy")


def test_builtins_are_registered_in_order_with_the_papers_defaults():
    assert [s.name for s in available_methods("segmentation")][:5] == BUILTINS
    assert get_method("smoothgrad").defaults() == {"n_samples": 20, "noise_level": 0.1, "grad_strategy": "loop"}
    assert get_method("integrated_gradients").defaults()["n_steps"] == 20
    assert get_method("kernel_shap_cubes").defaults()["n_samples"] == 1000
    assert get_method("kernel_shap_cubes").defaults()["n_cubes"] == 512
    assert get_method("kernel_shap_semantic").defaults()["n_samples"] == 200
    assert get_method("kernel_shap_semantic").needs == ("label_map",)
    assert [s.name for s in available_methods("regression")] == ["smoothgrad", "image_reg_lime", "gradcampp",
                                                                  "layercam"]  # issues 11, 12
    from XAIExplainerLib.attribution import ATTRIBUTION_METHODS, smoothgrad

    assert get_method(smoothgrad) is get_method("smoothgrad")  # a registered function finds its spec
    assert list(ATTRIBUTION_METHODS)[:5] == BUILTINS and ATTRIBUTION_METHODS["smoothgrad"] is smoothgrad


def test_toy_method_appears_in_cli_help_pipeline_and_gui_list(toy, capsys):
    from XAIExplainerLib.cli import main
    from XAIExplainerLib.pipelines.agg2exp import explain_volume

    assert toy in available_methods("segmentation")  # what the Slicer module builds its menu from
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "toy (Toy scaling)" in help_text and "--toy-factor" in help_text
    assert "toy scaling factor of the input" in help_text

    volume = phantom()
    expl = explain_volume(volume, tiny_model(), method="toy", classes=["soft"], method_params={"factor": 2.5})
    model = tiny_model()
    expected = 2.5 * model.to_array(model.to_tensor(model.preprocess(volume)))[0, 0]
    np.testing.assert_allclose(expl.importance.matrix.sum(), 1.0, atol=1e-6)
    assert expl.provenance["method"] == "toy" and expl.provenance["params"] == {"factor": 2.5}
    heat = model.to_input_grid(model.preprocess(volume).with_array(expected), volume, "linear").array
    np.testing.assert_allclose(expl.attributions["soft"].array, heat, rtol=1e-5, atol=1e-5)


def test_toy_method_flag_reaches_the_method_and_is_refused_by_others(toy, tmp_path):
    from XAIExplainerLib.cli.explain import method_params_from_args
    from XAIExplainerLib.cli.main import build_parser

    argv = ["explain", "--input", "a.nii", "--model", "m.pt", "--output", str(tmp_path / "o"),
            "--method", "toy", "--toy-factor", "3"]
    args = build_parser().parse_args(argv)
    assert method_params_from_args(args, "toy") == {"factor": 3.0}
    args = build_parser().parse_args(argv[:-4] + ["--method", "smoothgrad", "--toy-factor", "3"])
    with pytest.raises(MethodParameterError, match="--toy-factor does not apply to smoothgrad"):
        method_params_from_args(args, "smoothgrad")
    args = build_parser().parse_args(argv[:-4] + ["--method", "integrated_gradients", "--samples", "7"])
    assert method_params_from_args(args, "integrated_gradients")["n_steps"] == 7  # the shared flag, per method


@pytest.mark.parametrize("method, params, option, allowed", [
    ("smoothgrad", {"n_samples": 0}, "n_samples", "an integer >= 1"),
    ("smoothgrad", {"n_samples": -3}, "n_samples", "an integer >= 1"),
    ("smoothgrad", {"n_samples": 2.5}, "n_samples", "an integer >= 1"),
    ("smoothgrad", {"n_samples": True}, "n_samples", "an integer >= 1"),
    ("smoothgrad", {"noise_level": 0.0}, "noise_level", "a number > 0 and <= 1"),
    ("smoothgrad", {"noise_level": -0.1}, "noise_level", "a number > 0 and <= 1"),
    ("smoothgrad", {"noise_level": float("nan")}, "noise_level", "a number > 0"),
    ("integrated_gradients", {"rule": "simpson"}, "rule", "one of trapezoid, riemann_left"),
    ("kernel_shap_cubes", {"n_samples": 2}, "n_samples", "an integer >= 3"),
    ("kernel_shap_cubes", {"n_cubes": 1}, "n_cubes", "an integer >= 8"),
])
def test_out_of_range_options_name_the_option_and_the_allowed_range(method, params, option, allowed):
    with pytest.raises(MethodParameterError) as info:
        get_method(method).validate(params)
    message = str(info.value)
    assert f"option '{option}'" in message and allowed in message and method in message


def test_unknown_option_lists_the_methods_options_and_nothing_runs():
    calls = []
    spec = register_method(MethodSpec("counting", "Counting", "", "", lambda *a, **k: calls.append(k),
                                      ("segmentation",), (OptionSpec("n_samples", int, 4, "n", minimum=1),),
                                      deterministic=False))
    try:
        expected = r"does not take option\(s\) n_stepz.*n_samples \(an integer >= 1\)"
        with pytest.raises(MethodParameterError, match=expected):
            call_method(spec, None, None, None, {"n_stepz": 3})
        assert calls == []
        call_method("counting", None, None, None, {"n_samples": "6"}, seed=3, device="cpu", label_map="unused")
        assert calls == [{"n_samples": 6, "seed": 3, "device": "cpu"}]  # text coerced; undeclared plumbing dropped
    finally:
        unregister_method("counting")


def test_deterministic_methods_get_no_seed_and_defaults_are_filled():
    seen = {}

    def record(model, x, target, **kwargs):
        seen.update(kwargs)

    spec = MethodSpec("record", "Record", "", "", record, ("segmentation",),
                      (OptionSpec("rule", str, "a", "rule", choices=("a", "b")),), deterministic=True)
    call_method(spec, None, None, None, None, seed=1, progress=None)
    assert seen == {"rule": "a", "progress": None}


def test_registration_rejects_inconsistent_specs_and_unknown_names():
    bad_default = MethodSpec("bad", "Bad", "", "", scaled_input, ("segmentation",),
                             (OptionSpec("n", int, 0, "n", minimum=1),), deterministic=True)
    with pytest.raises(MethodParameterError, match="option 'n' got 0"):
        register_method(bad_default)
    with pytest.raises(MethodParameterError, match="model_kinds"):
        register_method(MethodSpec("bad", "Bad", "", "", scaled_input, ("audio",), (), deterministic=True))
    with pytest.raises(MethodParameterError, match="already registered"):
        register_method(get_method("smoothgrad"))
    with pytest.raises(UnknownMethodError, match="vanilla_gradient, smoothgrad"):
        get_method("gradcam")
    assert "bad" not in [s.name for s in available_methods()]
