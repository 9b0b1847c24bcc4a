import json
import pickle
import zipfile

import pytest
import torch

import bgpt
from bgpt.checkpoint import save_pretrained, to_reference_state_dict
from bgpt.cli import main
from bgpt.errors import CheckpointError
from bgpt.model import BGPT

from .reference_bgpt import RefBGPT
from .test_model import random_batch


def loss_of(model, config):
    batch = random_batch(config)
    with torch.no_grad():
        return model.eval()(batch.patches, batch.mask).loss.item()


@pytest.fixture
def ref_state(tiny_config):
    c = tiny_config
    ref = RefBGPT(c.patch_size, c.max_patches, c.hidden_size, c.patch_layers, c.byte_layers)
    return ref.state_dict()


def test_save_and_load_round_trip(tmp_path, tiny_config):
    model = BGPT(tiny_config)
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    again = bgpt.load(tmp_path / "m")
    assert again.config == tiny_config
    assert loss_of(model, tiny_config) == loss_of(again, tiny_config)


def test_run_folder_prefers_best(tmp_path, tiny_config):
    a, b = BGPT(tiny_config), BGPT(tiny_config)
    save_pretrained(a, tmp_path / "run" / "latest")
    save_pretrained(b, tmp_path / "run" / "best")
    assert loss_of(bgpt.load(tmp_path / "run"), tiny_config) == loss_of(b, tiny_config)


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("mask_buffers", [False, True])
def test_reference_pth_variants_load(tmp_path, tiny_config, ref_state, wrap, mask_buffers):
    state = dict(ref_state)
    if mask_buffers:  # old transformers versions saved causal-mask buffers
        for k in list(state):
            if k.endswith("attn.c_attn.weight"):
                state[k.replace("c_attn.weight", "bias")] = torch.ones(1, 1, 8, 8)
                state[k.replace("c_attn.weight", "masked_bias")] = torch.tensor(-1e4)
    obj = (
        {"model": state, "optimizer": {}, "epoch": 3, "best_epoch": 2, "min_eval_loss": 1.0}
        if wrap
        else state
    )
    torch.save(obj, tmp_path / "weights.pth")
    model = bgpt.load(tmp_path / "weights.pth")
    assert model.config.patch_size == 4 and model.config.max_patches == 16
    assert (model.config.patch_layers, model.config.byte_layers) == (2, 2)
    ours = to_reference_state_dict(model)
    for k, v in ref_state.items():
        if k != "patch_level_decoder.base.wte.weight":  # a vocabulary of one, never used
            assert torch.equal(ours[k], v), k


def test_reference_pth_via_cli_import(tmp_path, ref_state, capsys):
    torch.save({"model": ref_state}, tmp_path / "w.pth")
    assert main(["import", str(tmp_path / "w.pth"), "--out", str(tmp_path / "out")]) == 0
    assert main(["info", str(tmp_path / "out"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert info["kind"] == "generative" and info["config"]["hidden_size"] == 128


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def bad_files(tmp_path, tiny_config):
    save_pretrained(BGPT(tiny_config), tmp_path / "good")
    cases = {}
    (tmp_path / "empty.pth").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.pth", "empty file")
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 10)
    cases["noise"] = (tmp_path / "noise.pth", "not a loadable PyTorch checkpoint")
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "foreign.pth")
    cases["foreign"] = (tmp_path / "foreign.pth", "not a bGPT checkpoint")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    cases["list"] = (tmp_path / "list.pth", "not a bGPT checkpoint")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump(Evil(), f)
    cases["evil"] = (tmp_path / "evil.pth", "not a loadable PyTorch checkpoint")
    good = tmp_path / "good.pth"
    torch.save(to_reference_state_dict(BGPT(tiny_config)), good)
    raw = good.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = (tmp_path / "trunc.pth", "not a loadable PyTorch checkpoint")
    cases["missing"] = (tmp_path / "nope.pth", "no such file")
    (tmp_path / "emptydir").mkdir()
    cases["empty folder"] = (tmp_path / "emptydir", "no config.json")
    for name, edit in {
        "bad json": lambda d: (d / "config.json").write_text("{"),
        "foreign json": lambda d: (d / "config.json").write_text('{"a": 1}'),
        "bad field": lambda d: (d / "config.json").write_text(
            json.dumps({"format": "bgpt", "config": {"hidden": 1}})
        ),
        "bad weights": lambda d: (d / "model.safetensors").write_bytes(b"\x10\x00" * 50),
        "trunc weights": lambda d: (d / "model.safetensors").write_bytes(
            (d / "model.safetensors").read_bytes()[:1000]
        ),
        "shape mismatch": lambda d: (d / "config.json").write_text(
            json.dumps({"format": "bgpt", "config": {**tiny_config.to_dict(), "hidden_size": 64}})
        ),
    }.items():
        d = tmp_path / name.replace(" ", "_")
        save_pretrained(BGPT(tiny_config), d)
        edit(d)
        cases[name] = (
            d,
            {
                "bad json": "unreadable config",
                "foreign json": "not a bgpt config",
                "bad field": "unknown field",
                "bad weights": "corrupt",
                "trunc weights": "corrupt",
                "shape mismatch": "shape",
            }[name],
        )
    return cases


def test_bad_checkpoints_give_one_clear_error(tmp_path, tiny_config, capsys):
    for name, (path, message) in bad_files(tmp_path, tiny_config).items():
        with pytest.raises(CheckpointError, match=message):
            bgpt.load(path)
        assert main(["info", str(path)]) == 2, name
        err = capsys.readouterr()
        assert "pwned" not in err.out
        lines = err.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bgpt info: error:"), (name, lines)


def test_zip_without_data_is_rejected(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.pth", "w") as z:
        z.writestr("archive/data.pkl", b"junk")
    with pytest.raises(CheckpointError):
        bgpt.load(tmp_path / "x.pth")
