"""Reliability: corrupt or non-finite checkpoints are refused, a torn metrics line does not
break resume, OS errors on the run folder are one line with exit status 2, decompression and
pixel bombs are refused before they are inflated (restore's non-finite float options:
tests/e2e/test_restore_user_inputs.py)."""
import contextlib
import math

import pytest
import torch

from energyvae.errors import CheckpointError
from energyvae.train import LAST, load_checkpoint, save_checkpoint
from energyvae.train.logger import read_metrics
from helpers import TINY, cli, make_cfg, run


def _state():
    torch.manual_seed(0)
    return {"step": 3, "model": {"w": torch.randn(64, 8), "b": torch.zeros(8, dtype=torch.bfloat16)},
            "info": {"note": "x"}}


def _flip(path, offset_from_end):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x40
    path.write_bytes(bytes(data))


def test_checkpoint_roundtrip_and_flipped_bytes_are_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _state())
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], _state()["model"]["w"]) and back["info"] == {"note": "x"}
    for offset in (1, 200, 2000):                     # bytes inside the tensor data
        save_checkpoint(path, _state())
        _flip(path, offset)
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            load_checkpoint(path)


def test_checkpoint_with_edited_json_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    assert b'\\"x\\"' in data
    path.write_bytes(data.replace(b'\\"x\\"', b'\\"y\\"'))     # same length: still parses
    with pytest.raises(CheckpointError, match="checksum mismatch|not a readable"):
        load_checkpoint(path)


def test_non_finite_weights_are_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    state = _state()
    state["model"]["w"][3, 2] = math.nan
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(path)


def test_torn_last_metrics_line_does_not_break_resume(tmp_path, kill_training_at):
    cfg = make_cfg(tmp_path / "r")
    kill_training_at(12, lambda: run(cfg))
    metrics = tmp_path / "r" / "metrics.jsonl"
    with metrics.open("ab") as f:
        f.write(b'{"step": 11, "split": "train", "lo')     # a kill in the middle of a write
        f.write(b"\n\xff\xfe garbage\n")
    with pytest.warns(UserWarning, match="unreadable"):
        assert all(r["step"] <= 10 for r in read_metrics(tmp_path / "r"))
    with pytest.warns(UserWarning, match="unreadable"):
        trainer = run(cfg, resume=True)
    assert trainer.step == 20
    steps = [r["step"] for r in read_metrics(tmp_path / "r") if r["split"] == "train"]
    assert steps == sorted(steps) and steps[-1] == 20


def test_cli_refuses_a_corrupt_checkpoint_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    res = cli("train", "--config", "configs/digits_vae.yaml", *TINY, "train.steps=4", "eval.iw_samples=0",
              f"run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("best.safetensors", LAST):
        _flip(run_dir / "checkpoints" / name, 100)
    res = cli("sample", run_dir, "--n", 4, "--out", tmp_path / "s.png")
    assert res.returncode == 2 and "checksum mismatch" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_os_errors_on_the_run_folder_are_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = cli("train", "--config", "configs/digits_vae.yaml", *TINY, "train.steps=2", "eval.iw_samples=0",
              f"run.dir={blocker}/run")
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1 and str(blocker) in res.stderr
    assert blocker.read_text() == "not a folder"


def test_gzip_idx_bomb_is_refused_without_inflating_it(tmp_path):
    import gzip

    from energyvae.data.formats import read_idx
    from energyvae.errors import DataError
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:                  # header: 2 x 2 x 2, then 64 MiB of zeros
        f.write(bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") * 3)
        for _ in range(64):
            f.write(bytes(2 ** 20))
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path)
    with gzip.open(path, "wb") as f:                  # a header that declares 2^40 bytes
        f.write(bytes([0, 0, 8, 2]) + (2 ** 20).to_bytes(4, "big") * 2)
    with pytest.raises(DataError, match="declares"):
        read_idx(path)


def test_png_declaring_too_many_pixels_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    from PIL import Image

    from energyvae.data.formats import load_image_folder
    from energyvae.errors import DataError
    for side, message in ((10000, "larger than"), (20000, "decompression bomb")):
        path = tmp_path / "bomb.png"                  # 100 M pixels: our bound; 400 M: PIL's own
        Image.new("L", (4, 4)).save(path)
        data = bytearray(path.read_bytes())
        ihdr = data.index(b"IHDR")
        data[ihdr + 4: ihdr + 12] = struct.pack(">II", side, side)
        data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])))
        path.write_bytes(bytes(data))
        with pytest.warns() if side == 10000 else contextlib.nullcontext():
            with pytest.raises(DataError, match=message):
                load_image_folder(tmp_path)


def test_config_fuzzer_finds_no_crash():
    """200 seeded mutations of the shipped configs: each is valid or one EnergyVAEError
    (the 2,000-case run: ``python scripts/fuzz_configs.py``)."""
    import subprocess
    import sys

    from helpers import ROOT
    res = subprocess.run([sys.executable, "scripts/fuzz_configs.py", "--cases", "200", "--seed", "7"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 crashes" in res.stdout


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", ["corrupt last", "config mismatch", "torn metrics"])
def test_a_failed_resume_leaves_the_run_folder_byte_identical(tmp_path, kill_training_at, damage):
    cfg = make_cfg(tmp_path / "r")
    kill_training_at(12, lambda: run(cfg))
    folder = tmp_path / "r"
    if damage == "corrupt last":
        _flip(folder / "checkpoints" / LAST, 50)
    elif damage == "torn metrics":
        with (folder / "metrics.jsonl").open("ab") as f:
            f.write(b'{"step": 11, "spl')
        _flip(folder / "checkpoints" / LAST, 50)
    else:
        from energyvae.config import build_config
        cfg = build_config({**cfg.raw, "model": {**cfg.raw["model"], "latent_dim": 5}})  # another model
    before = _snapshot(folder)
    with pytest.raises(CheckpointError):
        run(cfg, resume=True)
    assert _snapshot(folder) == before


def test_resume_fallback_to_best_only_with_the_flag(tmp_path, kill_training_at):
    """A corrupt ``last`` stops ``--resume`` with a message naming the flag; with the flag the
    run continues from ``best`` (an earlier or equal step) and finishes like an uninterrupted
    run (resume from any checkpoint is exact)."""
    from energyvae.runs import prepare
    from energyvae.train import BEST, Trainer

    ref = run(make_cfg(tmp_path / "ref"))
    cfg = make_cfg(tmp_path / "r")
    kill_training_at(17, lambda: run(cfg))
    best_step = load_checkpoint(tmp_path / "r" / "checkpoints" / BEST)["step"]
    _flip(tmp_path / "r" / "checkpoints" / LAST, 50)
    with pytest.raises(CheckpointError, match="--resume-fallback"):
        run(cfg, resume=True)
    data, model = prepare(cfg)
    with pytest.warns(UserWarning, match=f"continuing from .*best.*step {best_step}"):
        trainer = Trainer(cfg, model, data, resume=True, fallback=True)
    assert trainer.step == best_step
    trainer.fit()
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, trainer.model.state_dict()[k]), k


def test_resume_before_the_first_checkpoint_starts_over(tmp_path, kill_training_at):
    cfg = make_cfg(tmp_path / "r", eval_every=10, checkpoint_every=10)
    kill_training_at(3, lambda: run(cfg))
    assert (tmp_path / "r" / "config.yaml").is_file() and not (tmp_path / "r" / "checkpoints").exists()
    with pytest.warns(UserWarning, match="starting from step 0"):
        trainer = run(cfg, resume=True)
    assert trainer.step == 20
    ref = run(make_cfg(tmp_path / "ref", eval_every=10, checkpoint_every=10))
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, trainer.model.state_dict()[k]), k


def test_atomic_write_keeps_the_old_file_and_no_temporary_on_failure(tmp_path):
    from energyvae.atomic import atomic_write, atomic_write_text, remove_stale_temporaries
    path = atomic_write_text(tmp_path / "m.json", "old")

    def half_then_fail(p):
        open(p, "w").write("ne")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    (tmp_path / ".m.json.abc.tmp").write_text("torn")       # what a kill -9 mid-write leaves
    assert remove_stale_temporaries(tmp_path) == 1 and path.read_text() == "old"


def test_kill_minus_9_at_random_instants_then_resume_matches_uninterrupted_run():
    """One kill of each kind (a random wall-clock instant, between steps, inside a checkpoint
    write, between a checkpoint and its side-car, inside a metrics write, inside the config
    write) of one run, each followed by --resume; the end state equals an uninterrupted run's
    bit for bit (the 20-kill run: ``python scripts/kill_resume.py``)."""
    import subprocess
    import sys

    from helpers import ROOT
    res = subprocess.run([sys.executable, "scripts/kill_resume.py", "--kills", "6", "--seed", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "identical to the uninterrupted run" in res.stdout
    landed = int(res.stdout.split(" of ")[0].split()[-1])
    assert landed >= 4, res.stdout


def test_checkpoint_tensor_names_never_collide(tmp_path):
    a, b, c = torch.ones(2), torch.zeros(3), torch.full((1,), 7.0)
    save_checkpoint(tmp_path / "c.safetensors", {"m": {"1": a, 5: b}, "n": {"a.0": a, "a": [c]}})
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert torch.equal(back["m"]["1"], a) and torch.equal(back["m"][5], b)
    assert torch.equal(back["n"]["a.0"], a) and torch.equal(back["n"]["a"][0], c)


def test_resume_of_a_finished_run_without_checkpoints_is_refused(tmp_path):
    import shutil
    cfg = make_cfg(tmp_path / "r", steps=5)
    from energyvae.commands.train import train_run
    train_run(cfg)
    shutil.rmtree(tmp_path / "r" / "checkpoints")
    before = _snapshot(tmp_path / "r")
    with pytest.raises(CheckpointError, match="finished run without checkpoints"):
        run(cfg, resume=True)
    assert _snapshot(tmp_path / "r") == before
