"""`timm:NAME` / `torchvision:NAME` model sources: parsing, dispatch, recorded specs, and the
errors a user meets without a working [vision] extra.

The libraries themselves are exercised where they import. In this project's venv torchvision is
absent, and where it is installed beside the CPU torch it fails to import (its wheel is built
for another torch); timm imports torchvision. Those tests skip with the import's own reason.
"""

from __future__ import annotations

import importlib.util
import socket
import sys

import pytest
import torch
from torch import nn

from edgegate.errors import BackendUnavailable, BadInput
from edgegate.models import (
    is_factory_spec,
    is_vision_spec,
    load_checkpoint,
    load_model,
    save_checkpoint,
    shipped_weights,
    vision,
    with_vision_options,
)
from edgegate.models.checkpoint import LoadedModel
from edgegate.models.vision import VisionSpec, parse_vision_spec
from edgegate.pipeline.tasks import resolve_task
from tests.conftest import assert_one_line_error

INSTALL = "pip install 'edgegate-nn[vision]'"


def _bad(fn, *args, **kwargs) -> str:  # noqa: ANN001
    with pytest.raises(BadInput) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def _needs(library: str) -> None:
    """Skip, with the import's own reason, where ``library`` cannot be used."""
    failure = vision.import_failure(library)
    if failure:
        pytest.skip(f"{library} does not import here: {failure}")


# --- specs ------------------------------------------------------------------------------------


def test_spec_identity_keeps_num_classes_and_drops_pretrained():
    spec = parse_vision_spec("timm:efficientnet_b0:num_classes=10,pretrained=true")
    assert spec == VisionSpec("timm", "efficientnet_b0", 10, True)
    assert spec.identity == "timm:efficientnet_b0:num_classes=10"
    assert spec.text == "timm:efficientnet_b0:num_classes=10,pretrained=true"
    plain = parse_vision_spec(" torchvision:mobilenet_v3_small ")
    assert plain.identity == plain.text == "torchvision:mobilenet_v3_small"
    assert parse_vision_spec("timm:resnet18.a1_in1k").name == "resnet18.a1_in1k"  # a weight tag


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("timm:", "no model name after 'timm:'"),
        ("torchvision: ", "no model name after 'torchvision:'"),
        ("timm:resnet18:", "nothing after ':'"),
        ("timm:resnet18:num_classes=ten", "expected an integer"),
        ("timm:resnet18:num_classes=1", "num_classes must be at least 2"),
        ("timm:resnet18:pretrained=maybe", "expected true or false"),
        ("timm:resnet18:depth=3", "unknown option 'depth'"),
        ("timm:resnet18:num_classes", "malformed option"),
        ("timm:resnet18:num_classes=3,num_classes=4", "given twice"),
        ("torchvision:mobile net", "is not a torchvision model name"),
    ],
)
def test_malformed_specs_are_one_line_bad_input(spec, fragment):
    assert fragment in _bad(parse_vision_spec, spec)


def test_cli_flags_fold_into_the_spec():
    assert with_vision_options("timm:resnet18") == "timm:resnet18"
    assert with_vision_options("qvit") == "qvit"  # no flags: any model passes through
    assert with_vision_options("timm:resnet18", num_classes=10) == "timm:resnet18:num_classes=10"
    assert (
        with_vision_options("torchvision:resnet18", num_classes=5, pretrained=True)
        == "torchvision:resnet18:num_classes=5,pretrained=true"
    )
    assert with_vision_options("timm:resnet18:num_classes=5", num_classes=5).endswith("=5")
    assert "says num_classes=5" in _bad(
        with_vision_options, "timm:resnet18:num_classes=5", num_classes=7
    )
    assert "at least 2" in _bad(with_vision_options, "timm:resnet18", num_classes=0)
    zoo = _bad(with_vision_options, "mobilenet-v3-se", num_classes=10)
    assert "--num-classes applies to timm:NAME" in zoo and "mobilenet-v3-se:num_classes" in zoo
    assert "--pretrained applies" in _bad(with_vision_options, "mine.pt", pretrained=True)


# --- dispatch and records -----------------------------------------------------------------------


def test_library_specs_are_not_user_factories():
    for spec in ("timm:resnet18", "torchvision:resnet18", "timm:"):
        assert is_vision_spec(spec) and not is_factory_spec(spec)
    for spec in ("timmy:build", "mypkg.timm:build", "torchvision_extra:build"):
        assert not is_vision_spec(spec) and is_factory_spec(spec)
    assert not is_vision_spec("qvit:attention=gated") and not is_vision_spec(None)
    assert shipped_weights("timm:resnet18") is None


def test_a_library_spec_never_asks_for_trust_code():
    """Building a timm/torchvision model runs the library's code, not the user's."""
    try:
        loaded = load_model("torchvision:mobilenet_v3_small:num_classes=10")
    except BackendUnavailable as err:
        assert "--trust-code" not in str(err) and INSTALL in str(err)
        return
    assert loaded.task == "image" and loaded.spec == "torchvision:mobilenet_v3_small:num_classes=10"


def test_checkpoint_records_the_identity_not_the_weights_source(tmp_path):
    path = save_checkpoint(
        tmp_path / "m.pt", nn.Linear(2, 2), "timm:efficientnet_b0:num_classes=10,pretrained=true"
    )
    assert load_checkpoint(path)["spec"] == "timm:efficientnet_b0:num_classes=10"


def test_checkpoint_of_one_model_refuses_another_before_building(tmp_path):
    """Checked before the library is asked for anything: the same line with or without it."""
    path = save_checkpoint(
        tmp_path / "m.pt", nn.Linear(2, 2), "timm:efficientnet_b0:num_classes=10"
    )
    for other in ("timm:resnet18", "torchvision:efficientnet_b0", "mobilenet-v3-se"):
        message = _bad(load_model, other, path)
        assert "saved for model 'timm:efficientnet_b0:num_classes=10'" in message, message
    assert "saved for model" in _bad(load_model, "timm:efficientnet_b0:num_classes=5", path)
    zoo = save_checkpoint(tmp_path / "z.pt", nn.Linear(2, 2), "mobilenet-v3-se")
    assert "saved for model 'mobilenet-v3-se'" in _bad(load_model, "timm:efficientnet_b0", zoo)
    both = _bad(load_model, "timm:efficientnet_b0:pretrained=true", path)
    assert "--pretrained and checkpoint" in both and "pass one" in both


def test_library_models_are_image_classifiers_without_task():
    loaded = LoadedModel(nn.Linear(2, 2), "timm:resnet18", None, task="image")
    assert resolve_task(loaded).name == "image"
    assert resolve_task(loaded, "image").name == "image"
    assert "drop --task lm" in _bad(resolve_task, loaded, "lm")


# --- without a working extra --------------------------------------------------------------------


@pytest.fixture
def fresh_imports(monkeypatch):
    """Forget what this process learnt about importing the libraries."""
    monkeypatch.setattr(vision, "_import_failures", {})
    for name in ("torchvision", "timm"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_missing_extra_is_exit_3_before_any_work(run_cli, tmp_path):
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here: the missing-extra path cannot be met")
    out = tmp_path / "out"
    for spec in ("timm:efficientnet_b0", "torchvision:mobilenet_v3_small", "timm:no_such_net"):
        result = run_cli("export", spec, "--num-classes", "10", "-o", out)
        assert_one_line_error(result, spec, "not installed", INSTALL, code=3)
        assert "pip install edgegate " not in result.stderr
    assert not out.exists()
    result = run_cli("train", "timm:efficientnet_b0", "-o", tmp_path / "e.pt")
    assert_one_line_error(result, "torchvision and timm are not installed", code=3)


def test_broken_torchvision_is_exit_3_naming_the_import_error(
    run_cli, tmp_path, monkeypatch, fresh_imports
):
    """An installed torchvision built for another torch raises while importing (beside the
    CPU torch: "operator torchvision::nms does not exist"). A package in a temporary folder
    that raises the same stands in for it, so that this runs where the wheel is absent too."""
    site = tmp_path / "site"
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "out"
    for spec, extra in (("torchvision:mobilenet_v3_small", ""), ("timm:resnet18", "timm imports")):
        result = run_cli("export", spec, "-o", out)
        assert_one_line_error(
            result,
            f"{spec}: ",
            "does not import here beside torch",
            "RuntimeError: operator torchvision::nms does not exist",
            extra,
            code=3,
        )
    assert not out.exists()


def test_malformed_specs_fail_with_exit_2_even_without_the_extra(run_cli, tmp_path):
    assert_one_line_error(run_cli("export", "timm:", "-o", tmp_path), "no model name", code=2)
    result = run_cli("evaluate", "timm:x:num_classes=1")
    assert_one_line_error(result, "timm:x:num_classes=1", code=2)  # printed as typed, no emoji
    result = run_cli("export", "qvit", "--num-classes", "10", "-o", tmp_path / "q")
    assert_one_line_error(result, "--num-classes applies to timm:NAME", code=2)


# --- with the libraries (where they import) ---------------------------------------------------


def test_torchvision_classifier_builds_and_reloads_from_its_checkpoint(tmp_path):
    _needs("torchvision")
    loaded = load_model("torchvision:mobilenet_v3_small:num_classes=10")
    assert loaded.task == "image" and loaded.info is None
    assert loaded.origin == "torchvision random init"
    x = torch.randn(2, 3, 32, 32)
    assert loaded.module(x).shape == (2, 10)
    path = save_checkpoint(tmp_path / "tv.pt", loaded.module, loaded.spec)
    for spec in (None, "torchvision:mobilenet_v3_small"):  # -c alone, or the bare name
        again = load_model(spec, path)
        assert again.spec == "torchvision:mobilenet_v3_small:num_classes=10"
        assert torch.equal(again.module(x), loaded.module(x))
    bare = tmp_path / "state.pt"
    torch.save(loaded.module.state_dict(), bare)
    message = _bad(load_model, "torchvision:mobilenet_v3_small", bare)
    assert "10-class head" in message and "--num-classes 10" in message


def test_unknown_names_are_bad_input_with_close_matches():
    _needs("torchvision")
    assert "close: resnet" in _bad(load_model, "torchvision:resnet999")
    assert "not an image classifier" in _bad(load_model, "torchvision:fasterrcnn_resnet50_fpn")
    _needs("timm")
    message = _bad(load_model, "timm:efficientnet_b00")
    assert "unknown timm model 'efficientnet_b00'" in message and "efficientnet_b0" in message
    assert "timm.list_models() lists them" in _bad(load_model, "timm:no_such_net")
    tag = _bad(load_model, "timm:resnet18.a1_in1kk")
    assert "unknown timm weight tag" in tag and "resnet18.a1_in1k" in tag


def test_timm_classifier_builds_with_its_head_resized():
    _needs("timm")
    loaded = load_model("timm:mobilenetv3_small_050:num_classes=7")
    assert loaded.module(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert vision.head_mismatch(loaded.module, {"classifier.weight": torch.zeros(3, 1024)}) == 3


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_pretrained_offline_fails_at_once_in_one_line(tmp_path, monkeypatch):
    _needs("timm")
    if _reachable("huggingface.co") or _reachable("download.pytorch.org"):
        pytest.skip("the network is reachable here: a download would really start")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty caches
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    for spec in ("timm:resnet18", "torchvision:resnet18"):
        message = _bad(load_model, f"{spec}:pretrained=true")
        assert f"cannot download pretrained weights for {spec}" in message
        assert "pass -c" in message


@pytest.mark.slow
def test_torchvision_export_validates_from_its_manifest(run_cli, tmp_path):
    _needs("torchvision")
    out = tmp_path / "tv"
    args = ["export", "torchvision:mobilenet_v3_small", "--num-classes", "10", "-o", out]
    assert run_cli(*args).code == 0
    manifest = (out / "manifest.json").read_text()
    assert '"model": "torchvision:mobilenet_v3_small:num_classes=10"' in manifest
    assert (out / "weights.pt").is_file()  # random init: no other file holds the weights
    result = run_cli("validate", out, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["passed"]
