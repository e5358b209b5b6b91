"""Restoration metrics (energyvae.imaging.quality)."""
import math

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from energyvae.imaging.quality import consistency, psnr, restoration_metrics, ssim, ssim_window


def test_psnr_identical_is_inf_and_cap():
    x = torch.rand(3, 1, 8, 8)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    assert torch.all(psnr(x, x, max_db=100.0) == 100.0)


def test_psnr_hand_case():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = x.clone()
    x_hat[0, 0, 0, 0] = 0.1  # mse = 0.01 / 4
    x_hat[1] = 0.5  # mse = 0.25
    p = psnr(x_hat, x)
    assert p.shape == (2,)
    assert p[0].item() == pytest.approx(10 * math.log10(1 / 0.0025), rel=1e-5)
    assert p[1].item() == pytest.approx(10 * math.log10(4.0), rel=1e-5)
    assert psnr(255 * x_hat, 255 * x, data_range=255.0)[0].item() == pytest.approx(p[0].item(), rel=1e-5)


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (4, 8, 8), (4, 1, 28, 28), (4, 3, 32, 32), (2, 3, 28, 20)])
def test_ssim_identical_and_noisy(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(*shape, generator=g)
    s = ssim(x, x)
    assert s.shape == (shape[0],)
    torch.testing.assert_close(s, torch.ones(shape[0]))
    noisy = (x + 0.1 * torch.randn(*shape, generator=g)).clamp(0, 1)
    sn = ssim(noisy, x)
    assert torch.all(sn < 0.99) and torch.all(sn > 0)
    assert torch.all(ssim((x + 0.3 * torch.randn(*shape, generator=g)).clamp(0, 1), x) < sn)


def test_ssim_window_rule_and_default_for_large_images():
    assert ssim_window(8, 8) == (7, pytest.approx(1.5 * 7 / 11))
    assert ssim_window(9, 28)[0] == 9 and ssim_window(28, 28) == (11, 1.5)
    with pytest.raises(ValueError):
        ssim_window(2, 8)
    x = torch.rand(3, 1, 28, 28)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    ref = structural_similarity_index_measure(y, x, data_range=1.0, reduction="none")
    torch.testing.assert_close(ssim(y, x), ref)
    # flat vectors with an image shape
    torch.testing.assert_close(ssim(y.flatten(1), x.flatten(1), image_shape=(1, 28, 28)), ref)
    with pytest.raises(ValueError):
        ssim(y.flatten(1), x.flatten(1))


def test_consistency_zero_when_measurements_agree():
    A = lambda t: t.mean(1)  # colorization: channel mean
    x = torch.rand(2, 3, 8, 8)
    delta = torch.randn(2, 1, 8, 8) * torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)
    assert torch.all(consistency(A, x + delta, x) < 1e-6)
    # inpainting mask: changes in the masked-out region are invisible to A
    mask = torch.zeros(1, 3, 8, 8)
    mask[..., :4, :] = 1
    x_hat = x + (1 - mask) * torch.rand(2, 3, 8, 8)
    assert torch.all(consistency(lambda t: t * mask, x_hat, x, reduction="sum") == 0)


def test_consistency_hand_case():
    A = lambda t: torch.nn.functional.avg_pool2d(t, 2)  # 4x4 -> 2x2
    x = torch.zeros(1, 1, 4, 4)
    x_hat = x.clone()
    x_hat[0, 0, 0, 0] = 0.4  # pooled pixel (0, 0) changes by 0.1
    x_hat[0, 0, 3, 3] = -0.8  # pooled pixel (1, 1) changes by -0.2
    assert consistency(A, x_hat, x, reduction="sum").item() == pytest.approx(0.3)
    assert consistency(A, x_hat, x).item() == pytest.approx(0.3 / 4)
    with pytest.raises(ValueError):
        consistency(A, x_hat, x, reduction="max")


def test_restoration_metrics_means():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 16, 16, generator=g)
    x_hat = (x + 0.05 * torch.randn(4, 3, 16, 16, generator=g)).clamp(0, 1)
    A = lambda t: t.mean(1)
    m = restoration_metrics(x_hat, x, A)
    assert set(m) == {"psnr", "ssim", "mse", "consistency"}
    assert m["psnr"] == pytest.approx(psnr(x_hat, x).mean().item())
    assert m["ssim"] == pytest.approx(ssim(x_hat, x).mean().item())
    assert m["consistency"] == pytest.approx(consistency(A, x_hat, x).mean().item())
    assert set(restoration_metrics(x_hat, x)) == {"psnr", "ssim", "mse"}
    assert restoration_metrics(x, x)["psnr"] == math.inf
