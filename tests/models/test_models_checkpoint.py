"""Checkpoints and load_model: safe by default, one-line BadInput for every bad input."""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from edgegate.errors import BadInput
from edgegate.models import (
    CHECKPOINT_FORMAT,
    build_model,
    load_checkpoint,
    load_model,
    round_to_half,
    save_checkpoint,
    shipped_weights,
)
from edgegate.models import checkpoint as ckpt_mod

SPEC = "qvit:depth=1,dim=32"


def _bad(fn, *args, **kwargs) -> str:  # noqa: ANN001
    with pytest.raises(BadInput) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_checkpoint_round_trip_weights_only(tmp_path: Path) -> None:
    model = build_model(SPEC)
    path = save_checkpoint(
        tmp_path / "sub" / "m.pt",
        model,
        "qvit:dim=32,depth=1,attention=softmax",
        metrics={"top1": 0.9, "epochs": 3},
        extra={"notes": ["a", 1, 2.5, True, None], "cfg": {"lr": 1e-3}},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT
    assert raw["spec"] == "qvit:depth=1,dim=32"
    ckpt = load_checkpoint(path)
    assert ckpt["metrics"] == {"top1": 0.9, "epochs": 3}
    assert ckpt["extra"]["cfg"] == {"lr": 1e-3}
    for key, value in model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][key], value)
    assert not list(path.parent.glob("*.tmp"))  # atomic: no temporary left behind

    loaded = load_model(None, path)
    assert loaded.spec == "qvit:depth=1,dim=32" and loaded.info is not None
    assert loaded.metrics["top1"] == 0.9 and not loaded.module.training
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    assert torch.equal(loaded.module(x), model(x))
    assert torch.equal(load_model(SPEC, path).module(x), model(x))
    assert torch.equal(load_model(str(path)).module(x), model(x))  # path given as the spec


def test_half_storage_holds_the_rounded_weights(tmp_path: Path) -> None:
    """A float16 file loads back into float32 parameters equal to the rounded model, so the
    metrics measured after `round_to_half` are the file's own."""
    model = build_model(SPEC).eval()
    full = save_checkpoint(tmp_path / "full.pt", model, SPEC)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    round_to_half(model)
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, original[k])]
    assert moved, "rounding to float16 changed no weight: the test would prove nothing"
    half = save_checkpoint(tmp_path / "half.pt", model, SPEC, half=True)
    stored = load_checkpoint(half)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(None, half).module
    for key, value in loaded.state_dict().items():
        assert value.dtype == original[key].dtype
        assert torch.equal(value, model.state_dict()[key]), key
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x), model(x))


def test_numpy_metrics_are_stored_as_builtins(tmp_path: Path) -> None:
    import numpy as np

    metrics = {"top1": np.float64(0.5), "n": np.int64(3), "ok": np.bool_(True)}
    extra = {"curve": np.arange(3, dtype=np.float32), "pair": (1, np.float32(2.0))}
    path = save_checkpoint(tmp_path / "np.pt", build_model(SPEC), SPEC, metrics, extra)
    ckpt = load_checkpoint(path)  # weights_only=True: would fail on any numpy global
    assert ckpt["metrics"] == {"top1": 0.5, "n": 3, "ok": True}
    assert type(ckpt["metrics"]["top1"]) is float and type(ckpt["metrics"]["n"]) is int
    assert ckpt["extra"] == {"curve": [0.0, 1.0, 2.0], "pair": [1, 2.0]}


def test_save_rejects_unsafe_metrics(tmp_path: Path) -> None:
    model = build_model(SPEC)
    _bad(save_checkpoint, tmp_path / "m.pt", model, SPEC, metrics={"x": object()})
    assert not (tmp_path / "m.pt").exists()


def test_load_checkpoint_bad_files(tmp_path: Path) -> None:
    assert "file not found" in _bad(load_checkpoint, tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 4)
    assert "garbage.pt" in _bad(load_checkpoint, garbage)
    good = save_checkpoint(tmp_path / "good.pt", build_model(SPEC), SPEC)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    assert "corrupt" in _bad(load_checkpoint, truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "other", "weights": torch.zeros(2)}, foreign)
    assert "not an edgegate checkpoint" in _bad(load_checkpoint, foreign)


def test_full_pickle_needs_trust_code(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(nn.Linear(3, 2), path)
    message = _bad(load_model, None, path)
    assert "full pickle" in message and "--trust-code" in message
    loaded = load_model(None, path, trust_code=True)
    assert isinstance(loaded.module, nn.Linear) and loaded.info is None


def test_wrong_keys_and_mismatched_spec(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "vit.pt", build_model(SPEC), SPEC)
    message = _bad(load_model, "qvit:depth=1,dim=32,attention=gated", path)
    assert "was saved for model" in message
    raw = tmp_path / "raw.pt"
    torch.save({"blocks.0.weight": torch.zeros(3), "extra.bias": torch.zeros(1)}, raw)
    message = _bad(load_model, SPEC, raw)
    assert "raw.pt" in message and "missing keys" in message and "extra.bias" in message
    assert "records no model spec" in _bad(load_model, None, raw)
    sd = build_model(SPEC).state_dict()
    torch.save(sd, raw)
    assert "does not fit" in _bad(load_model, "qvit:depth=1,dim=64", raw)
    assert load_model(SPEC, raw).spec == "qvit:depth=1,dim=32"  # bare state_dicts are fine


def test_load_model_needs_something() -> None:
    assert "no model given" in _bad(load_model, None)
    assert "unknown model" in _bad(load_model, "nope")


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(
        textwrap.dedent(
            """
            import torch

            def make():
                torch.manual_seed(1)
                return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())

            def broken():
                raise RuntimeError("boom")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg.tiny"
    for name in ("userpkg.tiny", "userpkg"):
        sys.modules.pop(name, None)


def test_factory_spec_requires_trust_code(factory_module: str, tmp_path: Path) -> None:
    spec = f"{factory_module}:make"
    message = _bad(load_model, spec)
    assert message == f"loading '{spec}' runs its Python code; pass --trust-code to allow it"
    assert factory_module not in sys.modules  # nothing was imported

    loaded = load_model(spec, trust_code=True)
    assert loaded.spec == spec and loaded.info is None and not loaded.module.training
    trained = loaded.module
    with torch.no_grad():
        trained[0].weight.fill_(0.5)
    path = save_checkpoint(tmp_path / "user.pt", trained, spec, metrics={"loss": 1.0})
    again = load_model(None, path, trust_code=True)  # spec recorded in the checkpoint
    assert torch.equal(again.module[0].weight, trained[0].weight)
    assert again.metrics == {"loss": 1.0}
    assert "--trust-code" in _bad(load_model, None, path)
    assert "factory failed" in _bad(load_model, f"{factory_module}:broken", trust_code=True)
    assert "no callable" in _bad(load_model, f"{factory_module}:nothing", trust_code=True)
    assert "cannot import" in _bad(load_model, "userpkg.absent:make", trust_code=True)


def test_pt2_round_trip(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval()
    x = torch.randn(2, 4)
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (x,)), path)
    loaded = load_model(str(path))
    assert isinstance(loaded.module, nn.Module) and loaded.info is None
    assert torch.allclose(loaded.module(x), model(x))
    assert "file not found" in _bad(load_model, str(tmp_path / "missing.pt2"))
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip archive")
    assert "corrupt" in _bad(load_model, str(bad))


def test_shipped_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ckpt_mod, "WEIGHTS_DIR", tmp_path)
    assert shipped_weights("qvit:attention=gated") is None
    model = build_model("qvit:attention=gated")
    save_checkpoint(tmp_path / "qvit__attention-gated.pt", model, "qvit:attention=gated")
    assert shipped_weights("qvit:attention=gated,depth=4") == tmp_path / "qvit__attention-gated.pt"
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(load_model("qvit:attention=gated").module(x), model.eval()(x))
    fresh = load_model("qvit:attention=gated", pretrained=False).module
    assert not torch.equal(fresh(x), model(x))
    name = shipped_weights("qlm:depth=2,attention=clipped")
    assert name is None
    stem = "qlm__attention-clipped_depth-2"
    save_checkpoint(
        tmp_path / f"{stem}.pt",
        build_model("qlm:depth=2,attention=clipped"),
        "qlm:attention=clipped,depth=2",
    )
    assert shipped_weights("qlm:depth=2,attention=clipped") == tmp_path / f"{stem}.pt"


def test_single_module_factory_spec(tmp_path, monkeypatch):
    """`mymod:factory` (no package) loads with --trust-code from the working folder."""
    from edgegate.models import is_factory_spec, load_model

    (tmp_path / "mymod_for_edgegate.py").write_text(
        "import torch\n\ndef factory():\n    return torch.nn.Linear(4, 2)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert is_factory_spec("mymod_for_edgegate:factory")
    assert not is_factory_spec("qvit:attention")  # a zoo name before the colon: a zoo spec
    loaded = load_model("mymod_for_edgegate:factory", trust_code=True)
    assert isinstance(loaded.module, torch.nn.Linear)


@pytest.mark.parametrize(
    "dims, max_batch",
    [
        (None, 3),  # a static batch: exactly the traced one
        ({0: torch.export.Dim("batch", max=5)}, 5),
        ({0: torch.export.Dim.AUTO}, None),  # unbounded (torch's int_oo)
    ],
)
def test_pt2_keeps_its_signature_and_batch_bound(tmp_path: Path, dims, max_batch) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval()
    x = torch.randn(3, 4)
    path = tmp_path / "tiny.pt2"
    shapes = None if dims is None else (dims,)
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), path)
    module = load_model(str(path)).module
    assert module.max_batch == max_batch
    # torch.export binds inputs and shapes to this signature: one per input, not *args
    assert list(inspect.signature(module.forward).parameters) == ["input"]
    program = torch.export.export(module, (x,), dynamic_shapes=shapes)
    assert torch.allclose(program.module()(x), model(x))
