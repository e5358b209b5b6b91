"""Checkpoint files: exact round trip, atomic replacement, clear errors on bad files."""
import pytest
import torch

from energyvae.errors import CheckpointError
from energyvae.train.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_with_optimizer_state(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.9))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    rng = torch.get_rng_state()
    state = {"step": 7, "model": net.state_dict(), "optim": opt.state_dict(),
             "rng": {"ranks": [{"torch": rng}]}, "best": {"value": 1.5, "step": None}}
    save_checkpoint(tmp_path / "c.safetensors", state)
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert back["step"] == 7 and back["best"] == {"value": 1.5, "step": None}
    for k, v in net.state_dict().items():
        assert torch.equal(back["model"][k], v)
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back["optim"])
    assert opt2.param_groups[0]["betas"] == (0.5, 0.9)
    for a, b in zip(opt.state_dict()["state"].values(), back["optim"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(back["rng"]["ranks"][0]["torch"], rng)
    assert (tmp_path / "c.json").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_overwrite_is_atomic_rename(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"step": 1, "w": torch.ones(2)})
    import energyvae.train.checkpoint as ck

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(ck, "save_file", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(2)})
    assert load_checkpoint(path)["step"] == 1          # the old checkpoint is intact
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_and_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x02garbage that is a pickle header")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(bad)
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, {"w": torch.ones(100)})
    good.write_bytes(good.read_bytes()[:-50])          # truncated
    with pytest.raises(CheckpointError):
        load_checkpoint(good)
