"""``energyvae restore``: restore user images (PNG/JPEG) with a trained run (paper 001 §4.3).

Inputs are read in one of two ways:

- **clean images** (the default): each is converted to the run's data shape (grayscale/RGB,
  bilinear resize to H x W; the notes say so), mapped to model space with the run's
  preprocessing (x) and degraded by the tool, y = A x.
- **degraded images** (``degraded=True``, ``--degraded``): the images are the observations y,
  read as they are: a size or channel count other than the task's is an error, never a resize
  or conversion. ``inpaint``: C x H x W images (the values of their missing pixels are
  ignored); ``colorize``: grayscale H x W images of an RGB run; ``sr2`` / ``sr4``: C x H/f x
  W/f low-resolution images. They are mapped to model space with the run's preprocessing (its
  seeded binarization / dequantization noise included) and used directly as y.

Inpainting masks are the tool's centre box or random pixels (``mask``, ``fraction``) or a user's
``mask_file``: an image of exactly the run's H x W whose pixels, after conversion to grayscale,
are 255 (white, observed) or 0 (black, missing). Any other size is rejected, not resized, and
any other value (gray levels from anti-aliasing or JPEG compression) is rejected, not
thresholded, so the mask used is exactly the one drawn. Degraded inpainting inputs need one.

Outputs in ``OUT``: ``<stem>.png``, the restored image alone at the run's resolution (pixel
exact); ``<stem>_compare.png``, labelled columns input (clean inputs only) | degraded (A+ y) |
restored; ``overview.png``, the same one row per image (the first ``OVERVIEW_ROWS``) when
there are several; and ``metrics.json``, per image and averaged: ``consistency_model``, the
mean |A x^ - y| in model space (0 up to float rounding, as x^ = A+ y + (I - A+ A) x'), and
for clean inputs PSNR, SSIM and Consistency (mean |A x^ - A x|) against the converted input,
on the [0, 1] images as saved (clipping to [0, 1] may leave a tiny non-zero Consistency).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..data.formats import IMAGE_SUFFIXES, check_image_size
from ..errors import DataError
from ..runs import load_run
from ..restoration.operators import OPERATORS, Inpaint, Operator, RestorationError
from ..restoration.zero_shot import EBM_MODES, data_energy, pinv_baseline, restore

METHODS = ("ebm", "no-ebm", "pinv")
BATCH = 64
OVERVIEW_ROWS = 16
#: PIL modes read without conversion as 1 or 3 channels (``degraded`` inputs)
AS_IS_MODES = {1: ("1", "L"), 3: ("RGB",)}


def image_files(path: str | Path) -> list[Path]:
    """The PNG/JPEG file ``path``, or those directly in the folder ``path``, sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no .png/.jpg/.jpeg images in this folder")
        return files
    if path.is_file():
        return [path]
    raise DataError(f"{path}: no such file or folder")


def _read_image(path: Path, convert):
    """``convert(im, path)`` of the PIL image at ``path``; an unreadable file is a :class:`DataError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            check_image_size(im, path)
            return convert(im, path)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def _pixels(im) -> torch.Tensor:
    """uint8 ``[C, H, W]`` of a PIL image in mode L or RGB."""
    c = len(im.getbands())
    flat = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return flat.view(im.height, im.width, c).permute(2, 0, 1)


def _channels_name(c: int) -> str:
    return "grayscale" if c == 1 else "RGB"


def load_images(path: str | Path, shape: tuple[int, int, int], *, as_is: bool = False,
                label: str = "the inputs"):
    """A PNG/JPEG file, or those directly in a folder, as uint8 ``[N, C, H, W]`` of ``shape``.

    Images are converted to grayscale / RGB and resized (bilinear) to H x W, or with ``as_is``
    must already have that size and channel count (modes 1 / L or RGB; otherwise a
    :class:`DataError` naming them ``label``). Returns ``(images, paths, notes)``; the notes say
    which conversions were made.
    """
    from PIL import Image

    files, (c, h, w) = image_files(path), shape
    mode, counts = ("L" if c == 1 else "RGB"), Counter()

    def convert(im, _):
        counts["converted"] += im.mode != mode
        im = im.convert(mode)
        if im.size != (w, h):
            counts["resized"] += 1
            im = im.resize((w, h), Image.BILINEAR)
        return _pixels(im)

    def check(im, p):
        if im.mode not in AS_IS_MODES[c] or im.size != (w, h):
            raise DataError(f"{p}: a {im.width}x{im.height} image of mode {im.mode}, but {label} must be "
                            f"{w}x{h} {_channels_name(c)} (mode {' or '.join(AS_IS_MODES[c])}); they are "
                            "neither resized nor converted")
        return _pixels(im.convert(mode))

    x = torch.stack([_read_image(p, check if as_is else convert) for p in files])
    notes = []
    if counts["converted"]:
        notes.append(f"{counts['converted']} image(s) converted to {_channels_name(c)} "
                     f"(the run's data is {c}x{h}x{w})")
    if counts["resized"]:
        notes.append(f"{counts['resized']} image(s) resized to {w}x{h} (bilinear, aspect ratio not kept)")
    return x.contiguous(), files, notes


def load_mask(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """The inpainting mask image at ``path`` as a bool ``[H, W]`` tensor (True = observed).

    It must be exactly ``size`` = (H, W) and, converted to grayscale, hold only 255 (white,
    observed) and 0 (black, missing): anything else is a :class:`DataError` (no resize, no threshold).
    """
    path, (h, w) = Path(path), size
    if not path.is_file():
        raise DataError(f"{path}: no such mask file")
    gray = _read_image(path, lambda im, _: _pixels(im.convert("L")))[0]
    if tuple(gray.shape) != (h, w):
        raise DataError(f"{path}: the mask is {gray.shape[1]}x{gray.shape[0]}, but it must be the run's "
                        f"image size {w}x{h} (masks are not resized)")
    other = (gray != 0) & (gray != 255)
    if other.any():
        raise DataError(f"{path}: the mask must be binary, 255 (white, observed) or 0 (black, missing) "
                        f"in grayscale; {int(other.sum())} pixel(s) have other values (e.g. "
                        f"{int(gray[other][0])}); masks are not thresholded")
    return gray == 255


def _check_options(task: str, method: str, degraded: bool, mask: str | None, fraction: float | None,
                   mask_file, ebm_mode: str = "data", **floats: float) -> None:
    """Reject an unknown task / method, conflicting mask options and non-finite numbers early."""
    if method not in METHODS:
        raise RestorationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if ebm_mode not in EBM_MODES:
        raise RestorationError(f"ebm mode must be one of {', '.join(EBM_MODES)}, got {ebm_mode!r}")
    if task not in OPERATORS:
        raise RestorationError(f"task must be one of {', '.join(OPERATORS)}, got {task!r}")
    for name, value in {"fraction": fraction, **floats}.items():
        if value is not None and not math.isfinite(value):
            raise RestorationError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    if mask_file is not None and task != "inpaint":
        raise RestorationError(f"--mask-file is for --task inpaint, not {task}")
    if mask_file is not None and (mask is not None or fraction is not None):
        raise RestorationError("--mask-file replaces --mask and --fraction: give one or the other")
    if degraded and task == "inpaint" and mask_file is None:
        raise RestorationError("--degraded --task inpaint needs --mask-file (which pixels are missing)")


def build_operator(task: str, shape, *, mask: str | None = None, fraction: float | None = None,
                   seed: int = 0, mask_file=None) -> tuple[Operator, dict]:
    """The task's operator for images of ``shape`` and the options that define it (for metrics.json)."""
    if mask_file is not None:
        return OPERATORS["inpaint"](shape, mask=load_mask(mask_file, shape[1:])), {"mask_file": str(mask_file)}
    options = {"mask": mask or "box", "fraction": fraction, "seed": seed} if task == "inpaint" else {}
    return OPERATORS[task](shape, **options), options


def observation_shape(op: Operator, shape) -> tuple[int, int, int]:
    """The shape ``(C, H, W)`` of y = A x for images x of ``shape``."""
    return tuple(op.A(torch.zeros(1, *shape)).shape[1:])


def _check_outputs(files: list[Path], out: Path) -> None:
    """No two outputs may share a name, and no output may overwrite an input."""
    sources: dict[str, list[str]] = {}
    for p in files:
        for name in (f"{p.stem}.png", f"{p.stem}_compare.png"):
            sources.setdefault(name, []).append(p.name)
    if len(files) > 1:
        sources.setdefault("overview.png", []).append("the overview")
    for name, inputs in sources.items():
        if len(inputs) > 1:
            raise DataError(f"{out / name}: would be written for {' and '.join(inputs)}; rename an input")
    inputs = {p.resolve() for p in files}
    for name in sources:
        if (out / name).resolve() in inputs:
            raise DataError(f"{out / name}: would overwrite an input image; choose another --out folder")


def _observations(op: Operator, raw: torch.Tensor, pre, degraded: bool, seed: int):
    """``(x, y)`` in model space: the clean images (None for degraded inputs) and y = A x.

    Degraded inputs are y after the run's preprocessing; inpainting drops their missing pixels
    (A is a projection there), the other tasks use them as they are.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)                  # binarization / dequantization of the inputs
        v = pre(raw)
    if not degraded:
        return v, op.A(v)
    return None, op.A(v) if isinstance(op, Inpaint) else v


def _preprocessing_notes(pre, task: str, degraded: bool) -> list[str]:
    """Notes on degraded colorize / SR inputs under a preprocessing that does not commute with A."""
    if not degraded or task == "inpaint":
        return []
    if pre.binarize:
        return ["the run binarizes its data: the degraded inputs were binarized too (seeded)"]
    if pre.dequantize == "uniform_logit":
        return ["the run's data is logit-transformed: y is the logit of the degraded pixels, not "
                "exactly A (an average) of the clean image's logit"]
    return []


def _restore_all(model, op: Operator, y: torch.Tensor, method: str, settings: dict, seed: int) -> torch.Tensor:
    """x^ for every observation, in batches of ``BATCH`` (batch i seeded ``seed + i``)."""
    parts = []
    for i in range(0, len(y), BATCH):
        part = y[i:i + BATCH]
        parts.append(pinv_baseline(op, part) if method == "pinv" else restore(
            model, part, op, use_ebm=method == "ebm", **{**settings, "seed": seed + i}))
    return torch.cat(parts)


def _scores(op: Operator, y: torch.Tensor, x_hat: torch.Tensor, columns: dict) -> dict:
    """Per-image metrics ``{name: Tensor[N]}`` (see the module docstring); ``columns`` holds the
    [0, 1] images as saved ("input" only for clean inputs)."""
    from ..imaging.quality import consistency, psnr, ssim

    scores = {}
    if "input" in columns:
        x_unit, x_hat_unit = columns["input"], columns["restored"]
        scores = {"psnr": psnr(x_hat_unit, x_unit), "ssim": ssim(x_hat_unit, x_unit),
                  "consistency": consistency(op.A, x_hat_unit, x_unit)}
    scores["consistency_model"] = (op.A(x_hat) - y).abs().flatten(1).mean(1)
    return scores


def _write_figures(out: Path, files: list[Path], columns: dict[str, torch.Tensor]) -> list[str]:
    """The restored PNGs, the compare figures and the overview; returns notes."""
    from ..viz import plot_beta_walk, save_compare, save_image_grid

    restored = columns["restored"]
    for k, p in enumerate(files):
        save_image_grid(restored[k:k + 1], out / f"{p.stem}.png", nrow=1, pad=0, scale=1)
        save_compare([c[k] for c in columns.values()], list(columns), out / f"{p.stem}_compare.png")
    if len(files) > 1:
        shown = files[:OVERVIEW_ROWS]
        rows = {p.stem: torch.stack([c[k] for c in columns.values()]) for k, p in enumerate(shown)}
        plot_beta_walk(rows, out / "overview.png", label=None, title=" | ".join(columns))
    if len(files) > OVERVIEW_ROWS:
        return [f"overview.png shows the first {OVERVIEW_ROWS} of {len(files)} images"]
    return []


def restore_files(run: str | Path, task: str, input_path: str | Path, out: str | Path, *,
                  method: str = "ebm", mask: str | None = None, fraction: float | None = None,
                  mask_file: str | Path | None = None, degraded: bool = False,
                  steps: int = 200, step_size: float = 1e-3, noise_scale: float = 0.1,
                  ebm_weight: float = 1.0, ebm_mode: str = "data", seed: int = 0, checkpoint: str = "best",
                  ema: bool = True) -> dict:
    """Restore the images at ``input_path`` with the run; write the PNGs and metrics.json to ``out``.

    ``mask`` (default "box") / ``fraction`` or ``mask_file`` define the inpainting mask;
    ``degraded`` says the images are already degraded (see the module docstring); ``ebm_mode``
    where the EBM term acts (``zero_shot.restore``: ``data``, at the energy's training temperature,
    or ``latent``, Eq. 6 as printed).
    """

    _check_options(task, method, degraded, mask, fraction, mask_file, ebm_mode, step_size=step_size,
                   noise_scale=noise_scale, ebm_weight=ebm_weight)
    _, data, model = load_run(run, checkpoint, ema=ema, need_data=False, spec_only=True)
    op, options = build_operator(task, data.shape, mask=mask, fraction=fraction, seed=seed, mask_file=mask_file)
    raw, files, notes = load_images(input_path, observation_shape(op, data.shape) if degraded else data.shape,
                                    as_is=degraded, label=f"--degraded {task} inputs of this run")
    out = Path(out)
    _check_outputs(files, out)
    if method == "ebm" and data_energy(model) is None:
        notes.append("the run has no EC calibrator: no EBM term (the same as --method no-ebm)")
    pre = data.preprocess
    notes += _preprocessing_notes(pre, task, degraded)
    x, y = _observations(op, raw, pre, degraded, seed)
    settings = {"steps": steps, "step_size": step_size, "noise_scale": noise_scale, "seed": seed,
                **({"ebm_weight": ebm_weight, "ebm_mode": ebm_mode} if method == "ebm" else {})}
    x_hat = _restore_all(model, op, y, method, settings, seed)
    columns = {"input": pre.to_unit(x)} if x is not None else {}
    columns.update({"degraded (A+ y)": pre.to_unit(pinv_baseline(op, y)), "restored": pre.to_unit(x_hat)})
    scores = _scores(op, y, x_hat, columns)
    notes += _write_figures(out, files, columns)
    result = {"run": str(run), "task": task, "method": method, "degraded": degraded, "notes": notes,
              "options": {**options, **(settings if method != "pinv" else {})},
              "images": {p.name: {name: float(v[k]) for name, v in scores.items()} for k, p in enumerate(files)},
              "mean": {name: float(v.mean()) for name, v in scores.items()}}
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    return result
