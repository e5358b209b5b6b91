"""``energyvae restore``: restore user images (PNG/JPEG) with a trained run (paper 001 §4.3).

Each image is converted to the run's data shape (grayscale/RGB, bilinear resize to H x W),
mapped to model space with the run's preprocessing, degraded with A, restored and written as
``OUT/<stem>.png`` (input | degraded A+ y | restored). ``OUT/metrics.json`` holds PSNR, SSIM and
Consistency (mean |A x^ - A x|) against the converted input, per image and averaged, on the
[0, 1] images as saved (clipping to [0, 1] may leave a tiny non-zero Consistency).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.formats import IMAGE_SUFFIXES
from ..errors import DataError
from .operators import OPERATORS, RestorationError
from .zero_shot import data_energy, pinv_baseline, restore

METHODS = ("ebm", "no-ebm", "pinv")
BATCH = 64


def load_images(path: str | Path, shape: tuple[int, int, int]):
    """A PNG/JPEG file, or those directly in a folder, as uint8 ``[N, C, H, W]`` of ``shape``.

    Returns ``(images, paths, notes)``; the notes say which conversions were made.
    """
    from PIL import Image, UnidentifiedImageError

    path, (c, h, w) = Path(path), shape
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no .png/.jpg/.jpeg images in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: no such file or folder")
    mode = "L" if c == 1 else "RGB"
    arrays, resized, converted = [], 0, 0
    for p in files:
        try:
            with Image.open(p) as im:
                converted += im.mode != mode
                im = im.convert(mode)
                if im.size != (w, h):
                    resized += 1
                    im = im.resize((w, h), Image.BILINEAR)
                arrays.append(torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{p}: not a readable image ({e})") from None
    notes = []
    if converted:
        notes.append(f"{converted} image(s) converted to {'grayscale' if c == 1 else 'RGB'} "
                     f"(the run's data is {c}x{h}x{w})")
    if resized:
        notes.append(f"{resized} image(s) resized to {w}x{h} (bilinear, aspect ratio not kept)")
    x = torch.stack(arrays).view(len(files), h, w, c).permute(0, 3, 1, 2).contiguous()
    return x, files, notes


def restore_files(run: str | Path, task: str, input_path: str | Path, out: str | Path, *,
                  method: str = "ebm", mask: str = "box", fraction: float | None = None,
                  steps: int = 200, step_size: float = 1e-3, noise_scale: float = 0.1,
                  ebm_weight: float = 1.0, seed: int = 0, checkpoint: str = "best", ema: bool = True) -> dict:
    """Restore the images at ``input_path`` with the run; write PNGs and metrics.json to ``out``."""
    from ..evaluation.restoration import consistency, psnr, ssim
    from ..runs import load_run
    from ..viz import save_image_grid

    if method not in METHODS:
        raise RestorationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if task not in OPERATORS:
        raise RestorationError(f"task must be one of {', '.join(OPERATORS)}, got {task!r}")
    _, data, model = load_run(run, checkpoint, ema=ema)
    options = {"mask": mask, "fraction": fraction, "seed": seed} if task == "inpaint" else {}
    op = OPERATORS[task](data.shape, **options)
    raw, files, notes = load_images(input_path, data.shape)
    if len({p.stem for p in files}) < len(files):
        raise DataError(f"{input_path}: two images share a file name stem; outputs would collide")
    if method == "ebm" and data_energy(model) is None:
        notes.append("the run has no EC calibrator: no EBM term (the same as --method no-ebm)")
    pre = data.preprocess
    with torch.random.fork_rng():
        torch.manual_seed(seed)                  # binarization / dequantization of the inputs
        x = pre(raw)
    settings = {"steps": steps, "step_size": step_size, "noise_scale": noise_scale, "seed": seed,
                **({"ebm_weight": ebm_weight} if method == "ebm" else {})}
    parts = []
    for i in range(0, len(x), BATCH):
        y = op.A(x[i:i + BATCH])
        x_hat = pinv_baseline(op, y) if method == "pinv" else restore(
            model, y, op, use_ebm=method == "ebm", **{**settings, "seed": seed + i})
        parts.append(x_hat)
    x_unit, x_hat_unit = pre.to_unit(x), pre.to_unit(torch.cat(parts))
    degraded = pre.to_unit(pinv_baseline(op, op.A(x)))
    scores = {"psnr": psnr(x_hat_unit, x_unit), "ssim": ssim(x_hat_unit, x_unit),
              "consistency": consistency(op.A, x_hat_unit, x_unit)}
    out = Path(out)
    images = {}
    for k, p in enumerate(files):
        save_image_grid(torch.stack([x_unit[k], degraded[k], x_hat_unit[k]]), out / f"{p.stem}.png", nrow=3)
        images[p.name] = {name: float(v[k]) for name, v in scores.items()}
    result = {"run": str(run), "task": task, "method": method, "notes": notes,
              "options": {**options, **(settings if method != "pinv" else {})}, "images": images,
              "mean": {name: float(v.mean()) for name, v in scores.items()}}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result
