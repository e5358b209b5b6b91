"""The papers' datasets in their real formats (STL-10 .bin, LSUN LMDB, downsampled-ImageNet npz,
CelebA with its partition file, CelebA-HQ folders, the ``mnist`` name), the centre crop and
resize of every image source, the ``data.augment`` flips, and each bad input as one DataError
line that names the file, with nothing written. Every file is written here, in its format as
documented, independently of the readers."""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from energyvae.data import DataBundle, DataConfig, Preprocess, Split, load_data
from energyvae.data.transforms import augment, flip_mask, hflip
from energyvae.errors import ConfigError, DataError
from energyvae.registry import parse_params

RNG = np.random.default_rng(0)


def assert_data_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert excinfo.value.__suppress_context__ or excinfo.value.__context__ is None
    for frag in fragments:
        assert str(frag) in msg, (frag, msg)


def snapshot(root: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def refused(cfg: DataConfig, root: Path, *fragments):
    """load_data(cfg) raises one DataError line naming ``fragments`` and writes nothing under root."""
    before = snapshot(root)
    with pytest.raises(DataError) as e:
        load_data(cfg)
    assert_data_error(e, *fragments)
    assert snapshot(root) == before


def images(n, h, w, c=3):
    return RNG.integers(0, 256, (n, h, w, c), dtype=np.uint8)   # [N, H, W, C]


def nchw(a):
    return a.transpose(0, 3, 1, 2)


def save_png(path: Path, arr: np.ndarray, fmt: str | None = None, **kw):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **kw)


def everything(b: DataBundle) -> list[bytes]:
    return sorted(t.tobytes() for s in (b.train, b.val) for t in s.x.numpy())


# ------------------------------------------------------------------------- hand computations
def pil_bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of PIL's bilinear resize (a triangle filter widened by the scale
    when shrinking, clipped at the borders and renormalised), written from its definition."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        for j in range(lo, hi):
            w[i, j] = max(0.0, 1 - abs((j + 0.5 - center) / support))
        w[i] /= w[i].sum()
    return w


def hand_resize(plane: np.ndarray, size: int) -> np.ndarray:
    """One uint8 [H, W] plane to [size, size]: horizontal pass, rounded to uint8, then vertical."""
    h, w = plane.shape
    rows = np.clip(np.round(plane @ pil_bilinear_weights(w, size).T), 0, 255) if w != size else plane
    out = pil_bilinear_weights(h, size) @ rows if h != size else rows
    return np.clip(np.round(out), 0, 255)


def hand_fit(img_hwc: np.ndarray, side: int | None, size: int | None) -> np.ndarray:
    """Centre square (torchvision's offsets: round((W - side) / 2)) then resize -> [C, H, W]."""
    h, w = img_hwc.shape[:2]
    if side:
        left, top = int(round((w - side) / 2)), int(round((h - side) / 2))
        img_hwc = img_hwc[top:top + side, left:left + side]
    chw = img_hwc.transpose(2, 0, 1)
    return chw if size is None else np.stack([hand_resize(p, size) for p in chw])


def test_hand_weights_are_the_documented_filter():
    # shrinking by 2: interior weights 1/8, 3/8, 3/8, 1/8; the border renormalised (3, 3, 1) / 7
    w = pil_bilinear_weights(8, 4)
    assert np.allclose(w[1, 1:5], [1 / 8, 3 / 8, 3 / 8, 1 / 8]) and np.allclose(w[0, :3], [3 / 7, 3 / 7, 1 / 7])


# ------------------------------------------------------------------------------------- STL-10
def stl_bytes(a_hwc: np.ndarray) -> bytes:
    """STL-10's layout: per image the R, G and B planes, each 96x96 in column-major order."""
    return b"".join(a_hwc[i, :, :, c].ravel(order="F").tobytes() for i in range(len(a_hwc)) for c in range(3))


def stl_folder(root: Path):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    data = {"train": images(3, 96, 96), "test": images(2, 96, 96), "unlabeled": images(4, 96, 96)}
    labels = {"train": np.array([1, 10, 4], np.uint8), "test": np.array([7, 2], np.uint8)}
    for k, a in data.items():
        (folder / f"{k}_X.bin").write_bytes(stl_bytes(a))
    for k, y in labels.items():
        (folder / f"{k}_y.bin").write_bytes(y.tobytes())
    return folder, data, labels


def test_stl10_pixels_and_labels(tmp_path):
    folder, data, labels = stl_folder(tmp_path)
    for path in (tmp_path, folder):
        b = load_data(DataConfig(name="stl10", path=str(path), val_fraction=0.0))
        assert b.shape == (3, 96, 96) and b.info["official_test"] and b.info["subset"] == "train"
        assert np.array_equal(b.test.x.numpy(), nchw(data["test"]))
        assert b.test.y.tolist() == [6, 1]
        got = {x.tobytes(): int(y) for x, y in zip(b.train.x.numpy(), b.train.y)}
        assert got == {x.tobytes(): int(y) - 1 for x, y in zip(nchw(data["train"]), labels["train"])}
    b = load_data(DataConfig(name="stl10", path=str(tmp_path), subset="unlabeled", val_fraction=0.0))
    assert b.train.y is None and b.test.y is None and len(b.train) == 4
    assert everything(b) == sorted(x.tobytes() for x in nchw(data["unlabeled"]))
    b = load_data(DataConfig(name="stl10", path=str(tmp_path), subset="train+unlabeled", val_fraction=0.0,
                             image_size=32))
    assert len(b.train) == 7 and b.shape == (3, 32, 32) and b.train.y is None


def test_stl10_orientation(tmp_path):
    folder, data, _ = stl_folder(tmp_path)
    img = np.zeros((1, 96, 96, 3), np.uint8)
    img[0, 0, :, 0] = 255          # top row red
    img[0, :, 0, 2] = 200          # left column blue
    (folder / "test_X.bin").write_bytes(stl_bytes(img))
    (folder / "test_y.bin").write_bytes(b"\x01")
    x = load_data(DataConfig(name="stl10", path=str(tmp_path))).test.x[0]
    assert (x[0, 0] == 255).all() and x[0, 1:].sum() == 0 and (x[2, :, 0] == 200).all() and x[2, :, 1:].sum() == 0


def test_stl10_bad_inputs(tmp_path):
    folder, _, _ = stl_folder(tmp_path)
    good = (folder / "train_X.bin").read_bytes()
    (folder / "train_X.bin").write_bytes(good[:-5])
    refused(DataConfig(name="stl10", path=str(tmp_path)), tmp_path, folder / "train_X.bin", "truncated",
            "27648", "re-extract")
    (folder / "train_X.bin").write_bytes(good)
    (folder / "train_y.bin").write_bytes(b"\x01\x02")
    refused(DataConfig(name="stl10", path=str(tmp_path)), tmp_path, folder / "train_y.bin", "2 labels", "3 images")
    (folder / "train_y.bin").write_bytes(b"\x00\x01\x02")
    refused(DataConfig(name="stl10", path=str(tmp_path)), tmp_path, folder / "train_y.bin", "1..10")
    (folder / "unlabeled_X.bin").unlink()
    refused(DataConfig(name="stl10", path=str(tmp_path), subset="unlabeled"), tmp_path,
            folder / "unlabeled_X.bin", "not found")
    refused(DataConfig(name="stl10", path=str(tmp_path / "nowhere")), tmp_path, tmp_path / "nowhere", "stl10_binary")


# ------------------------------------------------------------------------- downsampled ImageNet
def imagenet_rows(a_hwc: np.ndarray) -> np.ndarray:
    """The npz batches' rows: the R plane, then G, then B, each row-major."""
    return np.concatenate([a_hwc[..., c].reshape(len(a_hwc), -1) for c in range(3)], axis=1)


def imagenet_folder(root: Path, side: int = 32, sizes=(3, 2), n_val: int = 2, compressed=False):
    save = np.savez_compressed if compressed else np.savez
    out = {}
    train = root / f"Imagenet{side}_train_npz"
    train.mkdir(parents=True)
    for i, n in enumerate(sizes, 1):
        a, y = images(n, side, side), RNG.integers(1, 1001, n)
        save(train / f"train_data_batch_{i}.npz", data=imagenet_rows(a), labels=y.tolist(),
             mean=imagenet_rows(a).mean(0))
        out[i] = (a, y)
    val = root / f"Imagenet{side}_val_npz"
    val.mkdir()
    a, y = images(n_val, side, side), RNG.integers(1, 1001, n_val)
    save(val / "val_data.npz", data=imagenet_rows(a), labels=y)
    out["val"] = (a, y)
    return train, val, out


@pytest.mark.parametrize("side,compressed", [(32, False), (64, True)])
def test_imagenet_pixels_and_labels(tmp_path, side, compressed):
    train, val, out = imagenet_folder(tmp_path, side, compressed=compressed)
    b = load_data(DataConfig(name=f"imagenet{side}", path=str(tmp_path), val_fraction=0.0))
    assert b.shape == (3, side, side) and b.info["official_test"] and b.info["num_classes"] <= 1000
    assert b.info["source"] == [str(train / "train_data_batch_1.npz"), str(train / "train_data_batch_2.npz"),
                                str(val / "val_data.npz")]
    assert np.array_equal(b.test.x.numpy(), nchw(out["val"][0]))
    assert np.array_equal(b.test.y.numpy(), out["val"][1] - 1)
    want = {x.tobytes(): int(y) - 1 for k in (1, 2) for x, y in zip(nchw(out[k][0]), out[k][1])}
    assert {x.tobytes(): int(y) for x, y in zip(b.train.x.numpy(), b.train.y)} == want
    # one folder holding the batches directly works too, and the val file is optional
    b = load_data(DataConfig(name=f"imagenet{side}", path=str(train), val_fraction=0.0, test_fraction=0.2))
    assert not b.info["official_test"] and len(b.train) + len(b.test) == 5


def test_imagenet_32_and_64_side_by_side(tmp_path):
    _, _, out32 = imagenet_folder(tmp_path, 32, sizes=(2,), n_val=1)
    _, _, out64 = imagenet_folder(tmp_path, 64, sizes=(3,), n_val=1)
    b32 = load_data(DataConfig(name="imagenet32", path=str(tmp_path), val_fraction=0.0))
    b64 = load_data(DataConfig(name="imagenet64", path=str(tmp_path), val_fraction=0.0))
    assert b32.shape == (3, 32, 32) and len(b32.train) == 2 and np.array_equal(b32.test.x, nchw(out32["val"][0]))
    assert b64.shape == (3, 64, 64) and len(b64.train) == 3 and np.array_equal(b64.test.x, nchw(out64["val"][0]))
    (tmp_path / "old_Imagenet32_val").mkdir()
    (tmp_path / "old_Imagenet32_val" / "val_data.npz").write_bytes((tmp_path / "Imagenet32_val_npz" / "val_data.npz").read_bytes())
    refused(DataConfig(name="imagenet32", path=str(tmp_path)), tmp_path, "val_data.npz found in 2 folders",
            tmp_path / "old_Imagenet32_val", "point data.path at one")


def test_imagenet_bad_inputs(tmp_path):
    train, val, _ = imagenet_folder(tmp_path)
    cfg = DataConfig(name="imagenet32", path=str(tmp_path))
    np.savez(train / "train_data_batch_2.npz", data=imagenet_rows(images(2, 32, 32)), mean=np.zeros(3072))
    refused(cfg, tmp_path, train / "train_data_batch_2.npz", "missing key 'labels'", "has: data, mean")
    np.savez(train / "train_data_batch_2.npz", labels=[1, 2])
    refused(cfg, tmp_path, train / "train_data_batch_2.npz", "missing key 'data'")
    np.savez(train / "train_data_batch_2.npz", data=imagenet_rows(images(2, 32, 32)), labels=[0, 5])
    refused(cfg, tmp_path, train / "train_data_batch_2.npz", "1..1000")
    np.savez(train / "train_data_batch_2.npz", data=imagenet_rows(images(2, 32, 32)), labels=[1, 2, 3])
    refused(cfg, tmp_path, train / "train_data_batch_2.npz", "expected 2 integers")
    (train / "train_data_batch_2.npz").write_bytes(b"PK\x03\x04 not a zip")
    refused(cfg, tmp_path, train / "train_data_batch_2.npz", "re-download")
    (train / "train_data_batch_2.npz").unlink()
    np.savez(train / "train_data_batch_3.npz", data=imagenet_rows(images(2, 32, 32)), labels=[1, 2])
    refused(cfg, tmp_path, "train_data_batch_2.npz is missing", "incomplete")
    (train / "train_data_batch_3.npz").unlink()
    refused(DataConfig(name="imagenet64", path=str(tmp_path)), tmp_path, train / "train_data_batch_1.npz",
            "uint8 [N, 12288]", "64x64 download")
    np.save(val / "val_data.npy", np.zeros(3))
    (val / "val_data.npz").write_bytes(np.zeros(10).tobytes())
    refused(cfg, tmp_path, val / "val_data.npz")


# ---------------------------------------------------------------------------------------- LSUN
def lsun_db(path: Path, records: dict[bytes, bytes]):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k, v in records.items():
            txn.put(k, v)
    env.close()


def webp(a: np.ndarray, fmt="WEBP", **kw) -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_lsun_pixels_crop_and_resize(tmp_path):
    pytest.importorskip("lmdb")
    from PIL import features
    if not features.check("webp"):
        pytest.skip("Pillow without WebP")
    wide, tall, other = images(1, 8, 12)[0], images(1, 15, 8)[0], images(1, 10, 8)[0]
    db = tmp_path / "church_outdoor_train_lmdb"
    # keys as the export tool has them (hex ids), read back in key order
    lsun_db(db, {b"a1" * 20: webp(tall, lossless=True), b"0f" * 20: webp(wide, lossless=True),
                 b"ff" * 20: webp(other, "PNG")})
    before = snapshot(tmp_path)
    b = load_data(DataConfig(name="lsun", path=str(db), val_fraction=0.0, test_fraction=0.0))
    assert snapshot(tmp_path) == before                       # read-only: not even a lock file
    assert b.shape == (3, 8, 8) and b.train.y is None and b.info["records"] == 3
    # centre squares by hand: wide 12x8 -> columns 2..9; tall 8x15 -> rows round(3.5) = 4 .. 11
    want = [wide[:, 2:10], tall[4:12], other[1:9]]
    assert everything(b) == sorted(x.tobytes() for x in nchw(np.stack(want)))
    # resize after the crop, by hand (PIL's bilinear filter, +-1 for its fixed-point arithmetic)
    b = load_data(DataConfig(name="lsun", path=str(db), image_size=4, val_fraction=0.0, test_fraction=0.0))
    got = sorted(b.train.x.numpy().astype(int).tolist())
    exp = sorted(hand_fit(a, 8, 4).astype(int).tolist() for a in (wide, tall, other))
    assert np.abs(np.array(got) - np.array(exp)).max() <= 1
    g = load_data(DataConfig(name="lsun", path=str(db), image_size=4, grayscale=True))
    assert g.shape == (1, 4, 4)


def test_lsun_bad_inputs(tmp_path):
    pytest.importorskip("lmdb")
    db = tmp_path / "bedroom_train_lmdb"
    good = webp(images(1, 8, 8)[0], "PNG")
    lsun_db(db, {b"00": good, b"01": good[:40], b"02": good})
    refused(DataConfig(name="lsun", path=str(db), image_size=4), tmp_path, db, "record 01", "unreadable image")
    db2 = tmp_path / "kitchen_train_lmdb"
    lsun_db(db2, {b"00": good, b"01": b"RIFF\x00\x00\x00\x00WEBPVP8 garbage"})
    refused(DataConfig(name="lsun", path=str(db2)), tmp_path, db2, "record 01")
    (tmp_path / "empty").mkdir()
    refused(DataConfig(name="lsun", path=str(tmp_path / "empty")), tmp_path, tmp_path / "empty", "no data.mdb")
    bad = tmp_path / "junk_lmdb"
    bad.mkdir()
    (bad / "data.mdb").write_bytes(b"\x00" * 8192)
    refused(DataConfig(name="lsun", path=str(bad)), tmp_path, bad, "LMDB")
    db3 = tmp_path / "tower_train_lmdb"
    lsun_db(db3, {b"00": good, b"01": webp(images(1, 9, 12)[0], "PNG")})
    refused(DataConfig(name="lsun", path=str(db3)), tmp_path, "record 01", "9x9", "8x8", "image_size")


# -------------------------------------------------------------------------------------- CelebA
def celeba_folder(root: Path, parts=(0, 0, 0, 1, 2, 2), ext="png", partition=True, h=218, w=178):
    folder = root / "img_align_celeba"
    data = {}
    for i, part in enumerate(parts, 1):
        a = images(1, h, w)[0]
        save_png(folder / f"{i:06d}.{ext}", a)
        data[f"{i:06d}.{ext}"] = (a, part)
    if partition:
        (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, (_, p) in data.items()))
    return folder, data


def test_celeba_partition_and_crop(tmp_path):
    folder, data = celeba_folder(tmp_path)
    b = load_data(DataConfig(name="celeba", path=str(tmp_path)))
    # the default crop: the 140x140 centre square of 178x218, box (19, 39, 159, 179), by hand
    crop = {n: np.ascontiguousarray(a[39:179, 19:159].transpose(2, 0, 1)) for n, (a, _) in data.items()}
    assert b.shape == (3, 140, 140) and b.info["official_val"] and b.info["official_test"]
    assert b.info["partition_sizes"] == {"train": 3, "val": 1, "test": 2} and b.train.y is None
    assert sorted(x.tobytes() for x in b.train.x.numpy()) == sorted(crop[n].tobytes() for n in
                                                                  ("000001.png", "000002.png", "000003.png"))
    assert np.array_equal(b.val.x.numpy(), crop["000004.png"][None])
    assert np.array_equal(b.test.x.numpy(), np.stack([crop["000005.png"], crop["000006.png"]]))
    # crop then resize to 64 against the hand computation; the path may be the image folder itself
    b = load_data(DataConfig(name="celeba", path=str(folder), image_size=64))
    assert b.shape == (3, 64, 64) and b.info["partition"] == str(tmp_path / "list_eval_partition.txt")
    for got, name in ((b.val.x[0], "000004.png"), (b.test.x[1], "000006.png")):
        diff = got.numpy().astype(int) - hand_fit(data[name][0], 140, 64)
        assert np.abs(diff).max() <= 1, np.abs(diff).max()
    # crop_size 148 (the other common choice) and crop none (the squash, when asked for)
    b = load_data(DataConfig(name="celeba", path=str(tmp_path), crop_size=148))
    assert np.array_equal(b.val.x[0].numpy(), data["000004.png"][0][35:183, 15:163].transpose(2, 0, 1))
    b = load_data(DataConfig(name="celeba", path=str(tmp_path), crop="none", image_size=16))
    diff = b.val.x[0].numpy().astype(int) - hand_fit(data["000004.png"][0], None, 16)
    assert b.shape == (3, 16, 16) and np.abs(diff).max() <= 1


def test_celeba_without_partition_and_jpeg(tmp_path):
    celeba_folder(tmp_path, parts=(0,) * 6, ext="jpg", partition=False)
    b = load_data(DataConfig(name="celeba", path=str(tmp_path), image_size=8, test_fraction=0.2, val_fraction=0.0))
    assert not b.info["official_val"] and not b.info["official_test"] and b.info["partition"] is None
    assert len(b.train) == 5 and len(b.test) == 1 and b.shape == (3, 8, 8)
    # the official layout: Img/img_align_celeba + Eval/list_eval_partition.txt
    root = tmp_path / "official"
    folder, data = celeba_folder(root / "Img", parts=(0, 1, 2), partition=False, h=30, w=20)
    (root / "Eval").mkdir()
    (root / "Eval" / "list_eval_partition.txt").write_text("000001.png 0\n000002.png 1\n000003.png 2\n")
    b = load_data(DataConfig(name="celeba", path=str(root), crop_size=12))
    assert b.info["partition_sizes"] == {"train": 1, "val": 1, "test": 1}
    assert np.array_equal(b.test.x[0].numpy(), data["000003.png"][0][9:21, 4:16].transpose(2, 0, 1))


def test_celeba_bad_inputs(tmp_path):
    folder, data = celeba_folder(tmp_path, h=30, w=20)
    cfg = DataConfig(name="celeba", path=str(tmp_path), crop_size=16)
    part = tmp_path / "list_eval_partition.txt"
    (folder / "000003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    refused(cfg, tmp_path, folder / "000003.png", "unreadable image")
    save_png(folder / "000003.png", data["000003.png"][0])
    good = part.read_text()
    part.write_text(good + "000007.png 1\n")
    refused(cfg, tmp_path, folder / "000007.png", "missing", "incomplete")
    part.write_text(good.replace("000002.png 0\n", ""))
    refused(cfg, tmp_path, folder / "000002.png", "not listed", part)
    part.write_text(good.replace("000002.png 0", "000002.png 3"))
    refused(cfg, tmp_path, part, "line 2")
    part.write_text(good)
    save_png(folder / "000005.png", images(1, 10, 10)[0])
    refused(cfg, tmp_path, folder / "000005.png", "16x16 centre crop", "10x10")
    refused(DataConfig(name="celeba", path=str(tmp_path)), tmp_path, "140x140 centre crop")


def test_image_folder_and_celeba_hq(tmp_path):
    # CelebA-HQ: square images at 256 (here 16) px, resized; no labels even with subfolders
    for i in range(3):
        save_png(tmp_path / "hq" / f"{i:05d}.png", images(1, 16, 16)[0])
    b = load_data(DataConfig(name="celeba-hq", path=str(tmp_path / "hq"), image_size=8, test_fraction=0.0,
                             val_fraction=0.0))
    assert b.shape == (3, 8, 8) and b.train.y is None and len(b.train) == 3
    # image-folder: non-square images are squashed by default and centre-cropped on request
    a = images(1, 6, 10)[0]
    save_png(tmp_path / "f" / "a.png", a)
    save_png(tmp_path / "f" / "b.png", images(1, 6, 10)[0])
    b = load_data(DataConfig(name="image-folder", path=str(tmp_path / "f"), crop="center",
                             test_fraction=0.0, val_fraction=0.0))
    assert b.shape == (3, 6, 6) and a[:, 2:8].transpose(2, 0, 1).tobytes() in everything(b)
    b = load_data(DataConfig(name="image-folder", path=str(tmp_path / "f"), crop="center", image_size=3,
                             test_fraction=0.0, val_fraction=0.0))
    assert min(np.abs(x.astype(int) - hand_fit(a, 6, 3)).max() for x in b.train.x.numpy()) <= 1
    (tmp_path / "f" / "c.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    refused(DataConfig(name="image-folder", path=str(tmp_path / "f"), crop="center"), tmp_path,
            tmp_path / "f" / "c.jpg", "unreadable")


def test_crop_and_resize_of_array_sources(tmp_path):
    a = images(4, 10, 14)
    np.save(tmp_path / "a.npy", a)
    cfg = dict(name="array", path=str(tmp_path / "a.npy"), val_fraction=0.0, test_fraction=0.0)
    b = load_data(DataConfig(**cfg, crop="center"))
    assert b.shape == (3, 10, 10) and everything(b) == sorted(x.tobytes() for x in nchw(a[:, :, 2:12]))
    b = load_data(DataConfig(**cfg, crop_size=6, image_size=4))
    exp = sorted(hand_fit(x, 6, 4).astype(int).tolist() for x in a)
    got = sorted(b.train.x.numpy().astype(int).tolist())
    assert b.shape == (3, 4, 4) and np.abs(np.array(got) - np.array(exp)).max() <= 1
    # the same images as files: decoding one image at a time gives the very same pixels
    for i, x in enumerate(a):
        save_png(tmp_path / "png" / f"{i}.png", x)
    f = load_data(DataConfig(name="image-folder", path=str(tmp_path / "png"), crop_size=6, image_size=4,
                             val_fraction=0.0, test_fraction=0.0))
    assert everything(f) == everything(b)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(**cfg, crop_size=12))
    assert_data_error(e, tmp_path / "a.npy", "12x12", "14x10")
    np.save(tmp_path / "v.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="array", path=str(tmp_path / "v.npy"), augment=["hflip"]))
    assert_data_error(e, "float vectors", "augment")


def write_idx(path: Path, arr: np.ndarray):
    path.write_bytes(struct.pack(">I", 0x800 + arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
                     + arr.tobytes())


def test_mnist_is_mnist_idx(tmp_path):
    for stem, n in (("train", 5), ("t10k", 2)):
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte", RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", RNG.integers(0, 10, n, dtype=np.uint8))
    a = load_data(DataConfig(name="mnist", path=str(tmp_path), binarize=True))
    b = load_data(DataConfig(name="mnist-idx", path=str(tmp_path), binarize=True))
    assert a.name == "mnist" and a.shape == (1, 28, 28) and a.info == b.info
    assert all(torch.equal(getattr(a, s).x, getattr(b, s).x) for s in ("train", "val", "test"))
    with pytest.raises(ConfigError, match="path is required"):
        DataConfig(name="mnist")


# -------------------------------------------------------------------------------------- config
def test_config_of_the_new_options():
    for kw in [dict(crop="middle"), dict(crop_size=0), dict(crop="none", crop_size=140),
               dict(subset="unlabeled"), dict(name="stl10", path="x", subset="all"),
               dict(augment=["vflip"]), dict(augment=["hflip", "hflip"]), dict(name="U1", augment=["hflip"]),
               dict(name="moons", crop="center"), dict(name="lsun")]:
        with pytest.raises(ConfigError):
            DataConfig(**kw)
    with pytest.raises(ConfigError, match=r"^data.augment: expected"):
        parse_params(DataConfig, {"augment": "hflip"}, "data")
    with pytest.raises(ConfigError, match=r"^data: augment must be a list of: hflip"):
        parse_params(DataConfig, {"augment": ["rotate"]}, "data")
    with pytest.raises(ConfigError, match=r"data.crop"):
        parse_params(DataConfig, {"crop": "centre"}, "data")
    cfg = parse_params(DataConfig, {"augment": ["hflip"], "crop": "center", "crop_size": 148}, "data")
    assert cfg.augment == ["hflip"] and cfg.crop_spec() == ("center", 148)
    assert DataConfig(name="celeba", path="x").crop_spec() == ("center", 140)
    assert DataConfig(name="lsun", path="x").crop_spec() == ("center", None)
    assert DataConfig(name="celeba", path="x", crop="none").crop_spec() == ("none", None)
    assert DataConfig(name="cifar10", path="x").crop_spec() == ("none", None)
    assert DataConfig(name="cifar10", path="x", crop_size=24).crop_spec() == ("center", 24)


# ---------------------------------------------------------------------------------- augmentation
def lowbias32(x: int) -> int:
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_flip_mask_is_the_documented_hash():
    """Plain-integer arithmetic (no overflow anywhere) gives the same bits as the int64 tensors,
    for seeds and steps beyond 32 bits too."""
    from energyvae.data.transforms import _STREAMS, _step_key
    for seed, step in ((0, 0), (7, 123456), (2 ** 40 + 3, 2 ** 33 + 1)):
        h = lowbias32(_STREAMS["hflip"])
        for v in (seed, step):
            h = lowbias32(lowbias32(h ^ (v & 0xFFFFFFFF)) ^ (v >> 32))
        assert _step_key(_STREAMS["hflip"], seed, step) == h
        want = [lowbias32(lowbias32(p) ^ h) >> 31 for p in range(300)]
        assert flip_mask(300, seed, step).tolist() == [bool(w) for w in want]


def test_hflip_deterministic_disjoint_and_exact():
    x = torch.randint(0, 256, (256, 3, 4, 5), dtype=torch.uint8)
    y = hflip(x, seed=3, step=10)
    m = flip_mask(256, 3, 10)
    assert torch.equal(y[m], x[m].flip(-1)) and torch.equal(y[~m], x[~m])
    assert 0.35 < m.float().mean() < 0.65
    assert torch.equal(hflip(x, 3, 10), y)                          # a function of (seed, step)
    assert not torch.equal(flip_mask(256, 3, 11), m) and not torch.equal(flip_mask(256, 4, 10), m)
    # DDP: rank r holds positions r, r + world, ... of the global batch (the trainer's BatchStream)
    world = 4
    ranks = [flip_mask(64, 3, 10, rank=r, world=world) for r in range(world)]
    assert all(not torch.equal(ranks[0], r) for r in ranks[1:])
    assert torch.equal(torch.stack(ranks, 1).reshape(-1), m)        # the union is the 1-process draw
    # no global RNG is used: resume needs no extra state
    state = torch.get_rng_state()
    hflip(x, 1, 2)
    assert torch.equal(torch.get_rng_state(), state)
    # the stream over steps: about half of each example's flips over 200 steps
    rate = torch.stack([flip_mask(8, 0, s) for s in range(200)]).float().mean(0)
    assert ((rate > 0.35) & (rate < 0.65)).all()
    assert torch.equal(augment(x, [], 3, 10), x) and torch.equal(augment(x, ["hflip"], 3, 10), y)
    f = torch.rand(6, 2, 3)
    assert torch.equal(hflip(f, 0, 1), torch.where(flip_mask(6, 0, 1)[:, None, None], f.flip(-1), f))


def test_bundle_augment_batch(tmp_path):
    a = images(8, 4, 4)
    np.save(tmp_path / "a.npy", a)
    b = load_data(DataConfig(name="array", path=str(tmp_path / "a.npy"), augment=["hflip"]))
    raw = b.train.x
    assert b.augment == ("hflip",)
    assert torch.equal(b.augment_batch(raw, seed=0, step=5), hflip(raw, 0, 5))
    assert torch.equal(b.augment_batch(raw, seed=0, step=5, rank=1, world=2), hflip(raw, 0, 5, 1, 2))
    plain = DataBundle("x", "image", (3, 4, 4), Split(raw), Split(raw), Split(raw), Preprocess(), {})
    assert plain.augment_batch(raw, seed=0, step=5) is raw
    assert math.isclose(float(b.preprocess(b.augment_batch(raw, seed=0, step=5)).sum()),
                        float(b.preprocess(raw).sum()), rel_tol=1e-6)   # a flip moves pixels only
