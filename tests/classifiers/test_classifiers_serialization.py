"""save_classifier / load_classifier: safetensors + JSON, state dicts, refusal of unsafe formats."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from torch import nn

from glance.classifiers import (
    ARCHITECTURES,
    ClassifierAdapter,
    ReferenceClassifier,
    build_classifier,
    load_classifier,
    read_classifier_meta,
    save_classifier,
)
from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointIncompatibleError,
    ConfigError,
    UnknownNameError,
    UnsafeCheckpointError,
)


def _model(arch: str = "small-cnn", k: int = 3, c: int = 1, size: int = 28) -> ReferenceClassifier:
    net = build_classifier(arch, k, c, (size, size))
    return ReferenceClassifier(
        net,
        arch=arch,
        classes=[f"c{i}" for i in range(k)],
        in_channels=c,
        input_size=(size, size),
        mean=[0.2] * c,
        std=[0.4] * c,
        meta={"target": {"kind": "label", "name": "label"}},
    ).eval()


def test_round_trip_gives_identical_outputs_and_full_description(tmp_path):
    model = _model()
    path = tmp_path / "m.safetensors"
    json_path = save_classifier(model, path, {"accuracy": 0.97})
    desc = json.loads(json_path.read_text())
    assert desc["arch"] == "small-cnn" and desc["classes"] == ["c0", "c1", "c2"]
    assert desc["input_size"] == [28, 28] and desc["in_channels"] == 1
    assert desc["normalization"]["std"] == pytest.approx([0.4])
    assert desc["accuracy"] == 0.97 and desc["target"]["kind"] == "label"
    loaded = load_classifier(path)
    assert not loaded.training and loaded.input_size == (28, 28) and loaded.classes == model.classes
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.meta["accuracy"] == 0.97
    assert read_classifier_meta(path)["n_classes"] == 3
    via_json = load_classifier(json_path)  # the description names its weights file
    torch.testing.assert_close(via_json(x), model(x))
    # the adapter reads the geometry from the loaded module itself
    adapter = ClassifierAdapter(loaded)
    assert adapter.input_size == (28, 28) and adapter.in_channels == 1


@pytest.mark.parametrize(
    ("wrap", "arch"),
    [
        ("plain", "resnet18"),
        ("net-prefix", "small-cnn"),
        ("module-prefix", "small-cnn"),
        ("nested", "small-cnn"),
    ],
)
def test_plain_state_dict_loads_with_arch(tmp_path, wrap, arch):
    model = _model(arch, k=4, c=3, size=16 if arch == "resnet18" else 32)
    size = model.input_size[0]
    state = model.net.state_dict()
    if wrap == "net-prefix":
        state = model.state_dict()
    elif wrap == "module-prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "nested":
        state = {"state_dict": state, "epoch": 3}
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    loaded = load_classifier(path, arch=arch, input_size=size, mean=[0.2] * 3, std=[0.4] * 3)
    assert loaded.n_classes == 4 and loaded.in_channels == 3  # inferred from the weights
    x = torch.rand(2, 3, size, size)
    torch.testing.assert_close(loaded(x), model(x))


def test_plain_state_dict_without_arch_or_size_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_model().net.state_dict(), path)
    with pytest.raises(CheckpointError, match="pass arch="):
        load_classifier(path)
    with pytest.raises(ConfigError, match="input_size"):
        load_classifier(path, arch="small-cnn")


def test_checkpoint_of_other_class_count_lists_shape_mismatch(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_model(k=10).net.state_dict(), path)
    with pytest.raises(CheckpointIncompatibleError) as err:
        load_classifier(path, arch="small-cnn", classes=["a", "b"], input_size=28)
    msg = str(err.value)
    assert "head.5.weight: checkpoint (10, 128) vs small-cnn (2, 128)" in msg


def test_checkpoint_of_other_architecture_lists_keys(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_model("small-cnn").net.state_dict(), path)
    with pytest.raises(CheckpointIncompatibleError) as err:
        load_classifier(
            path, arch="resnet18", classes=["a", "b", "c"], in_channels=1, input_size=28
        )
    msg = str(err.value)
    assert "missing keys" in msg and "conv1.weight" in msg and "unexpected keys" in msg


def test_unknown_arch_lists_valid_names(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_model().net.state_dict(), path)
    with pytest.raises(UnknownNameError) as err:
        load_classifier(path, arch="resnet-18", input_size=28)
    assert "resnet18" in str(err.value) and "small-cnn" in str(err.value)
    assert {"small-cnn", "resnet18"} <= set(ARCHITECTURES.names())


def test_pickled_whole_module_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_model().net, path)
    with pytest.raises(UnsafeCheckpointError, match="state_dict"):
        load_classifier(path, arch="small-cnn", input_size=28)


class _Payload:
    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))  # would create the sentinel file if unpickled


@pytest.mark.parametrize("writer", ["torch.save", "raw-pickle"])
def test_malicious_pickle_never_runs(tmp_path, writer):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"weight": _Payload(str(sentinel))}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not sentinel.exists()
    with pytest.raises((UnsafeCheckpointError, CheckpointCorruptError)):
        load_classifier(path, arch="small-cnn", input_size=28)
    assert not sentinel.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_is_refused_with_hint(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())).save(str(path))
    with pytest.raises(UnsafeCheckpointError, match="TorchScript.*state_dict"):
        load_classifier(path, arch="small-cnn", input_size=28)


def test_corrupt_and_tampered_files_are_detected(tmp_path):
    path = tmp_path / "m.safetensors"
    save_classifier(_model(), path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip one weight byte: the recorded sha256 no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match="sha256"):
        load_classifier(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((10**9).to_bytes(8, "little") + b'{"a": 1}')  # header length lies
    with pytest.raises(CheckpointCorruptError, match="bad.safetensors"):
        load_classifier(bad, arch="small-cnn", input_size=28)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(64).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    with pytest.raises(CheckpointCorruptError, match="junk.pt"):
        load_classifier(junk, arch="small-cnn", input_size=28)


def test_corrupt_description_is_named(tmp_path):
    path = tmp_path / "m.safetensors"
    json_path = save_classifier(_model(), path)
    desc = json.loads(json_path.read_text())
    desc["input_size"] = "28x28"
    json_path.write_text(json.dumps(desc))
    with pytest.raises(CheckpointCorruptError, match="'input_size'"):
        load_classifier(path)
    json_path.write_text("{not json")
    with pytest.raises(CheckpointCorruptError, match="m.json"):
        load_classifier(path)


def test_save_refuses_foreign_modules_and_wrong_suffix(tmp_path):
    with pytest.raises(ConfigError, match="ReferenceClassifier"):
        save_classifier(nn.Linear(2, 2), tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match=".safetensors"):
        save_classifier(_model(), tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_classifier(tmp_path / "absent.pt", arch="small-cnn", input_size=28)


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_registered_architecture_builds_adapts_and_names_its_keys(arch):
    spec = ARCHITECTURES.get(arch)
    for channels, size in ((1, 28), (3, 32)):
        net = build_classifier(arch, 5, channels, (size, size))
        state = net.state_dict()
        assert state[spec.head_key].shape[0] == 5  # load_classifier infers the class count here
        assert state[spec.first_conv_key].shape[1] == channels  # ... and the channels here
        model = ReferenceClassifier(
            net, arch=arch, classes="abcde", in_channels=channels, input_size=(size, size)
        )
        adapter = ClassifierAdapter(model)
        _, h, w = adapter.feature_shape
        assert h * w > 1 and adapter.n_classes == 5
