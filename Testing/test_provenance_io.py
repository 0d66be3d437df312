"""provenance.py (one hashing family, fingerprints, run records), io.py (atomic folders, CSV/JSON, reading back) and
the progress helpers, against known answers."""
from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import torch

from XAIExplainerLib.errors import OutputExistsError, VolumeReadError
from XAIExplainerLib.io import (atomic_output_folder, read_json, read_result_volume, safe_name, write_json,
                                write_matrix_csv)
from XAIExplainerLib.progress import sub_progress
from XAIExplainerLib.provenance import (library_versions, model_fingerprint, run_provenance, sha256_file, volume_sha256,
                                        sha256_state_dict)
from XAIExplainerLib.volume import Volume


def _reference_state_dict_digest(state_dict) -> str:
    """The digest SegmentationModel.from_network and the pipeline used before they shared one routine."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_sha256_file_matches_hashlib_on_a_file_larger_than_one_block(tmp_path):
    data = np.random.default_rng(0).bytes((1 << 20) + 12345)  # spans two read blocks
    path = tmp_path / "weights.pt"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_state_dict_keeps_the_earlier_digest_and_hashes_bfloat16():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.InstanceNorm3d(2, track_running_stats=True))
    state = net.state_dict()
    assert sha256_state_dict(state) == _reference_state_dict_digest(state)
    # a transposed (non-contiguous) tensor hashes its values in C order, like numpy's tobytes
    t = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).t()}
    assert sha256_state_dict(t) == _reference_state_dict_digest(t)
    # numpy has no bfloat16; the uint8 view still hashes it, and a changed weight changes the digest
    bf = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    changed = dict(bf, **{"0.weight": bf["0.weight"] + 1})
    assert len(sha256_state_dict(bf)) == 64 and sha256_state_dict(bf) != sha256_state_dict(changed)


def test_model_fingerprint_prefers_the_adapters_hash_then_a_file_then_the_state_dict(tmp_path):
    from XAIExplainerLib.models import ModelConfig, SegmentationModel

    net = torch.nn.Conv3d(1, 2, 1)
    config = ModelConfig(label_names=["background", "organ"], roi_size=(32, 32, 32))
    model = SegmentationModel.from_network(net, config)
    assert model_fingerprint(model) == {"sha256": sha256_state_dict(net.state_dict()), "of": "state dict"}
    assert model_fingerprint(net) == {"sha256": sha256_state_dict(net.state_dict()), "of": "state dict"}

    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)

    class FromFile:
        weights_path = str(path)

    assert model_fingerprint(FromFile()) == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                             "of": "weights file w.pt"}
    assert model_fingerprint(object())["sha256"] == ""


def test_weights_loader_hashes_with_the_same_routine(tmp_path):
    from XAIExplainerLib.models import weights

    assert weights.file_sha256 is sha256_file


def test_run_provenance_records_what_ran_and_adds_product_entries():
    volume = Volume(np.zeros((4, 5, 6), np.float32), spacing=(1.0, 2.0, 3.0), metadata={"source": "scan.nii.gz"})
    model_space = Volume(np.zeros((2, 3, 4), np.float32), spacing=(2.0, 2.0, 2.0))

    class Result:
        params = {"n_samples": 3}
        seed = 7
        n_model_evaluations = 12
        seconds = 1.5

    record = run_provenance(method="smoothgrad", result=Result(), params={"n_samples": 99, "label_map": object()},
                            seed=0, volume=volume, model_space=model_space, model=torch.nn.Linear(1, 1),
                            device="cpu", timings={"attribution_s": 2.0}, product={"variant": "absolute"})
    assert record["params"] == {"n_samples": 3} and record["seed"] == 7  # what ran, not what was asked
    assert record["n_model_evaluations"] == 12 and record["attribution_seconds"] == 1.5
    assert record["input"] == {"shape_zyx": [4, 5, 6], "spacing_xyz": [1.0, 2.0, 3.0], "source": "scan.nii.gz",
                               "sha256": volume_sha256(volume)}
    assert record["model_grid"]["shape_zyx"] == [2, 3, 4] and record["variant"] == "absolute"
    assert record["versions"]["torch"] == torch.__version__ and list(record)[-1] == "created_utc"

    class Bare:  # a method result without its own record: the requested JSON-able options are kept
        pass

    bare = run_provenance(method="m", result=Bare(), params={"n_samples": 99, "label_map": object()}, seed=3,
                          volume=volume, model_space=model_space, model=object(), device="cpu",
                          timings={"attribution_s": 2.0})
    assert bare["params"] == {"n_samples": 99} and bare["seed"] == 3 and bare["attribution_seconds"] == 2.0
    assert set(library_versions(("no_such_package_xyz",))) >= {"XAIExplainerLib", "python", "numpy"}
    assert library_versions(("no_such_package_xyz",))["no_such_package_xyz"] == "not installed"


def test_atomic_output_folder_is_all_or_nothing(tmp_path):
    out = tmp_path / "result"
    with pytest.raises(RuntimeError):
        with atomic_output_folder(out) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("crash while writing")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_output_folder(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(OutputExistsError):
        with atomic_output_folder(out):
            pass
    with atomic_output_folder(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"] and len(list(tmp_path.iterdir())) == 1


def test_csv_json_and_names_round_trip(tmp_path):
    write_matrix_csv(tmp_path / "m.csv", np.array([[0.25, 0.75]]), ["liver, left"], ["a", "b"])
    rows = list(csv.reader((tmp_path / "m.csv").open()))
    assert rows == [["class", "a", "b"], ["liver, left", "0.25", "0.75"]]
    write_json(tmp_path / "p.json", {"path": tmp_path, "n": 1})
    assert read_json(tmp_path / "p.json") == {"path": str(tmp_path), "n": 1}
    assert safe_name("left kidney/cortex") == "left_kidney_cortex" and safe_name("***") == "unnamed"


def test_reading_back_names_the_missing_or_damaged_file(tmp_path):
    with pytest.raises(VolumeReadError, match="has no provenance.json"):
        read_json(tmp_path / "provenance.json")
    (tmp_path / "matrix.json").write_text("{not json")
    with pytest.raises(VolumeReadError, match="matrix.json is not valid JSON"):
        read_json(tmp_path / "matrix.json")
    with pytest.raises(VolumeReadError, match="has no labels.nii.gz"):
        read_result_volume(tmp_path / "labels.nii.gz")


def test_sub_progress_maps_a_step_onto_its_share_of_the_bar():
    seen = []
    step = sub_progress(lambda f, m: seen.append((round(f, 6), m)), 0.1, 0.6)
    step(0.0, "a")
    step(0.5, "b")
    step(1.0, "c")
    assert seen == [(0.1, "a"), (0.35, "b"), (0.6, "c")]


def test_volume_sha256_is_the_content_not_the_object():
    """Result folders of several methods are matched to one case by this hash (the comparison report): equal
    voxels on an equal grid hash equal whatever object holds them; one voxel, the spacing or the dtype changes it."""
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    a = Volume(data, spacing=(1.0, 1.0, 2.0), metadata={"source": "a.nii.gz"})
    same = Volume(data.copy(), spacing=(1.0, 1.0, 2.0), metadata={"source": "elsewhere.nrrd"})
    assert volume_sha256(a) == volume_sha256(same) and len(volume_sha256(a)) == 64
    changed = data.copy()
    changed[1, 2, 3] += 1
    assert volume_sha256(a.with_array(changed)) != volume_sha256(a)
    assert volume_sha256(Volume(data, spacing=(1.0, 1.0, 3.0))) != volume_sha256(a)
    assert volume_sha256(a.with_array(data.astype(np.float64))) != volume_sha256(a)
