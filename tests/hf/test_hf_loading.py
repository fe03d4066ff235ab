"""`hf:` specs: a save_pretrained folder loads as tokens -> logits; bad input is one line."""

from __future__ import annotations

import json

import pytest
import torch

from edgegate.errors import BadInput
from edgegate.models import load_model, save_checkpoint
from edgegate.models.hf import parse_hf_spec, with_revision
from tests.conftest import assert_one_line_error


def test_folder_loads_as_a_logits_only_lm(qwen3_next_dir):
    loaded = load_model(f"hf:{qwen3_next_dir}")
    assert loaded.task == "lm" and loaded.spec == f"hf:{qwen3_next_dir}"
    assert "qwen3_next" in loaded.origin
    tokens = torch.randint(0, 256, (3, 11))
    logits = loaded.module(tokens)
    assert logits.shape == (3, 11, 256) and logits.dtype == torch.float32


def test_checkpoint_weights_replace_the_folders(qwen3_next_dir, tmp_path):
    loaded = load_model(f"hf:{qwen3_next_dir}")
    with torch.no_grad():
        loaded.module.model.lm_head.weight.mul_(2)
    ckpt = save_checkpoint(tmp_path / "ft.pt", loaded.module, loaded.spec)
    again = load_model(None, ckpt)  # the checkpoint records the hf: spec
    assert again.spec == loaded.spec
    torch.testing.assert_close(
        again.module.model.lm_head.weight, loaded.module.model.lm_head.weight
    )


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("hf:", "nothing after 'hf:'"),
        ("hf:no such thing", "neither a folder nor a hub id"),
    ],
)
def test_malformed_specs(spec, fragment):
    with pytest.raises(BadInput, match=fragment):
        parse_hf_spec(spec)


def test_folder_without_safetensors_or_config_is_refused(qwen3_next_dir, tmp_path):
    with pytest.raises(BadInput, match="no config.json"):
        load_model(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text((qwen3_next_dir / "config.json").read_text())
    with pytest.raises(BadInput, match="no .safetensors weights"):
        load_model(f"hf:{tmp_path}")


def test_small_vocab_is_refused(qwen3_next_dir, tmp_path):
    for item in qwen3_next_dir.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["vocab_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInput, match="vocab_size 100 < 256"):
        load_model(f"hf:{tmp_path}")


def test_offline_hub_id_is_one_line_before_any_work(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache
    result = run_cli("export", "hf:edgegate-tests/not-cached", "-o", tmp_path / "out")
    assert_one_line_error(result, "cannot reach the hub", "pass a local folder")
    assert not (tmp_path / "out").exists()


def test_revision_folds_into_hub_ids_only(qwen3_next_dir):
    assert with_revision("hf:org/name", "abc") == "hf:org/name@abc"
    assert parse_hf_spec("hf:org/name@abc").revision == "abc"
    with pytest.raises(BadInput, match="local folder"):
        with_revision(f"hf:{qwen3_next_dir}", "abc")
    with pytest.raises(BadInput, match="applies to hf: hub models"):
        with_revision("gla-lm", "abc")


def test_missing_extra_is_exit_3_with_the_install_command(
    run_cli, qwen3_next_dir, tmp_path, monkeypatch
):
    import importlib

    real = importlib.import_module

    def without_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr("edgegate.models.hf.importlib.import_module", without_transformers)
    result = run_cli("export", f"hf:{qwen3_next_dir}", "-o", tmp_path / "out")
    assert_one_line_error(result, "[hf] extra", "pip install 'edgegate-nn[hf]'", code=3)
    assert not (tmp_path / "out").exists()


def test_revision_flag_reaches_the_hub_spec(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    result = run_cli("export", "hf:edgegate-tests/x", "--revision", "v1", "-o", tmp_path / "o")
    assert_one_line_error(result, "hf:edgegate-tests/x@v1", "cannot reach the hub")
    assert_one_line_error(
        run_cli("export", "gla-lm", "--revision", "v1", "-o", tmp_path / "o"), "--revision"
    )
