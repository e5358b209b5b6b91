"""Feature nets (training, caching, Inception errors) and the sample metrics (FID, KID, IS, P/R)."""
import dataclasses
import json
import os

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import torch

from energyvae.data import DataConfig, Split, load_data
from energyvae.errors import EnergyVAEError
from energyvae.evaluation import features as fm
from energyvae.evaluation import sample_metrics as sm

STEPS = 300   # enough for > 95% test accuracy on digits in about a second


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits"))


@pytest.fixture(scope="module")
def digits_net(digits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("feature_nets")
    net, info = fm.get_feature_net(digits, cache_dir=cache, progress=False, train_steps=STEPS)
    return net, info, cache


def _one_line_error(fn, *match):
    with pytest.raises(EnergyVAEError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for m in match:
        assert m in msg, msg
    return msg


def _spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ------------------------------------------------------------------------------ Frechet distance
@pytest.mark.parametrize("d", [1, 2, 5, 16, 64])
def test_frechet_distance_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    ref = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)
    ours = sm.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)
    # tensors (float32 in, float64 inside) give the same number
    t = [torch.as_tensor(a) for a in (mu1, s1, mu2, s2)]
    assert sm.frechet_distance(*t) == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_zero_for_identical_sets_and_errors():
    f = np.random.default_rng(0).standard_normal((500, 32)) ** 2      # non-Gaussian, like ReLU features
    mu, sigma = sm.feature_statistics(f)
    assert sigma.shape == (32, 32)
    assert sm.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    # rank-deficient covariance (fewer samples than dimensions) is fine too
    mu, sigma = sm.feature_statistics(f[:10])
    assert sm.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # scalar case: (m1 - m2)^2 + (s1 - s2)^2
    assert sm.frechet_distance(0.0, 4.0, 1.0, 1.0) == pytest.approx(1 + (2 - 1) ** 2)
    _one_line_error(lambda: sm.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2)), "shapes")


def test_fid_via_torchmetrics_equals_our_frechet_distance(digits, digits_net):
    net = digits_net[0]
    x = fm.to_unit_images(digits, digits.train.x)
    real, fake = x[:400], x[400:700]
    fake_noisy = (fake + 0.2 * torch.rand_like(fake)).clamp(0, 1)
    for other in (fake, fake_noisy):
        ours = sm.frechet_distance(*sm.feature_statistics(net.features(real)),
                                   *sm.feature_statistics(net.features(other)))
        assert sm.fid(real, other, net, batch_size=128) == pytest.approx(ours, rel=1e-6)
    assert sm.fid(real, fake_noisy, net) > 3 * sm.fid(real, fake, net)
    assert sm.fid(real, real, net) == pytest.approx(0.0, abs=1e-6)


def test_fid_custom_module_rgb_other_size():
    # an untrained 3x16x16 net: torchmetrics' dummy forward must use our input_img_size
    torch.manual_seed(0)
    net = fm.FeatureNet(fm.architecture_for((3, 16, 16), 5)).eval()
    real, fake = torch.rand(60, 3, 16, 16), torch.rand(50, 3, 16, 16) ** 2
    ours = sm.frechet_distance(*sm.feature_statistics(net.features(real)),
                               *sm.feature_statistics(net.features(fake)))
    assert sm.fid(real, fake, net, batch_size=16) == pytest.approx(ours, rel=1e-6)


def test_fid_vectors_uses_raw_coordinates():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 2, generator=g), torch.randn(300, 2, generator=g) * 2 + 1
    ref = sm.frechet_distance(*sm.feature_statistics(a), *sm.feature_statistics(b))
    assert sm.fid(a, b, None) == pytest.approx(ref, rel=1e-12)
    assert sm.fid(a, b, fm.RawFeatures(2)) == pytest.approx(ref, rel=1e-12)


# ------------------------------------------------------------------------------ KID
def test_kid_unbiased_on_same_distribution_and_positive_when_shifted():
    g = torch.Generator().manual_seed(1)
    same, shifted = [], []
    for _ in range(30):
        a, b = torch.randn(150, 8, generator=g), torch.randn(150, 8, generator=g)
        same.append(sm.kernel_inception_distance(a, b, None, subsets=10, subset_size=100)[0])
        shifted.append(sm.kernel_inception_distance(a, b + 0.5, None, subsets=10, subset_size=100)[0])
    same, shifted = np.array(same), np.array(shifted)
    se = same.std(ddof=1) / np.sqrt(len(same))
    assert abs(same.mean()) < 3 * se
    se_shift = shifted.std(ddof=1) / np.sqrt(len(shifted))
    assert shifted.mean() > 10 * se_shift and shifted.mean() > 20 * abs(same.mean())
    assert (shifted > 0).all()


def test_kid_subset_size_capped_and_seeded():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(40, 3, generator=g), torch.randn(30, 3, generator=g)
    state = torch.get_rng_state()
    m1, s1 = sm.kernel_inception_distance(a, b, None, subsets=5, subset_size=1000, seed=3)
    assert torch.equal(state, torch.get_rng_state())        # the global RNG is left alone
    m2, s2 = sm.kernel_inception_distance(a, b, None, subsets=5, subset_size=1000, seed=3)
    assert (m1, s1) == (m2, s2) and np.isfinite(m1)


# ------------------------------------------------------------------------------ precision / recall
def _brute_pr(real, fake, k):
    def radii(f):
        return np.sort(scipy.spatial.distance.cdist(f, f), axis=1)[:, k]
    p = (scipy.spatial.distance.cdist(fake, real) <= radii(real)[None]).any(1).mean()
    r = (scipy.spatial.distance.cdist(real, fake) <= radii(fake)[None]).any(1).mean()
    return p, r


def test_precision_recall_identical_disjoint_and_hand_case():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5))
    assert sm.precision_recall(x, x) == (1.0, 1.0)
    assert sm.precision_recall(x, x + 100.0) == (0.0, 0.0)
    # hand case, k = 1, points on a line:
    #   real 0, 1, 3, 10 -> radii (nearest other real) 1, 1, 2, 7
    #   fake 0.5 (in: |0.5-0| <= 1), 5 (in: |5-3| = 2 <= 2, closed ball), 5.5 (in: |5.5-10| <= 7),
    #        20 (out: 10 > 7), -1.5 (out) -> precision 3/5
    #   fake radii: -1.5: 2, 0.5: 2, 5: 0.5, 5.5: 0.5, 20: 14.5
    #   real 0 (in via 0.5), 1 (in via 0.5), 3 (out), 10 (in via 20: 10 <= 14.5) -> recall 3/4
    real = torch.tensor([[0.0, 0], [1, 0], [3, 0], [10, 0]])
    fake = torch.tensor([[0.5, 0], [5, 0], [5.5, 0], [20, 0], [-1.5, 0]])
    assert sm.knn_radii(real, k=1).tolist() == [1, 1, 2, 7]
    assert sm.knn_radii(fake, k=1).tolist() == [2, 0.5, 0.5, 14.5, 2]
    for chunk in (1, 2, 3, 1024):
        assert sm.precision_recall(real, fake, k=1, chunk_size=chunk) == (0.6, 0.75)
    _one_line_error(lambda: sm.precision_recall(real, fake, k=4), "k = 4")


def test_precision_recall_matches_brute_force_with_chunks():
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((157, 6)), rng.standard_normal((131, 6)) * 1.3 + 0.4
    ref = _brute_pr(real, fake, 3)
    for chunk in (16, 50, 1024):
        p, r = sm.precision_recall(torch.as_tensor(real), torch.as_tensor(fake), k=3, chunk_size=chunk)
        assert (p, r) == pytest.approx(ref, abs=1e-12)
    assert 0 < ref[0] < 1 and 0 < ref[1] < 1


# ------------------------------------------------------------------------------ Inception Score
def test_inception_score_limits():
    k, n = 10, 1000
    confident = 50.0 * torch.nn.functional.one_hot(torch.arange(n) % k, k).double()
    mean, std = sm.inception_score_from_logits(confident, splits=1)
    assert mean == pytest.approx(k, rel=1e-9) and std == 0.0
    mean, std = sm.inception_score_from_logits(confident, splits=10)   # random splits: ~K
    assert 9.0 < mean <= k + 1e-9 and std > 0
    constant = torch.randn(1, k, dtype=torch.float64).repeat(n, 1)
    mean, std = sm.inception_score_from_logits(constant, splits=10)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_with_classifier(digits, digits_net):
    net = digits_net[0]
    x = fm.to_unit_images(digits, digits.test.x)
    mean, std = sm.inception_score(x, net, splits=2)
    assert 4.0 < mean <= 10.0
    _one_line_error(lambda: sm.inception_score(x.flatten(1), fm.RawFeatures()), "logits")


# ------------------------------------------------------------------------------ compute_sample_metrics
def test_compute_sample_metrics_images(digits, digits_net):
    net = digits_net[0]
    x = fm.to_unit_images(digits, digits.train.x)
    real, fake = x[:500], x[500:900]
    noise = torch.rand(400, 1, 8, 8)
    good = sm.compute_sample_metrics(real, fake, net, kid_subsets=20, kid_subset_size=200)
    bad = sm.compute_sample_metrics(real, noise, net, kid_subsets=20, kid_subset_size=200)
    assert set(good) == {"fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "n_real", "n_fake"}
    assert good["n_real"] == 500 and good["n_fake"] == 400
    assert all(isinstance(v, float) for k, v in good.items() if not k.startswith("n_"))
    assert good["fid"] < bad["fid"] and good["kid"] < bad["kid"]
    assert good["precision"] > 0.8 and good["recall"] > 0.8 and bad["precision"] < 0.2
    assert good["is"] > bad["is"]
    only = sm.compute_sample_metrics(real, fake, net, metrics=("fid",))
    assert set(only) == {"fid", "n_real", "n_fake"} and only["fid"] == pytest.approx(good["fid"])


def test_compute_sample_metrics_vectors_and_errors(digits_net):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g)
    out = sm.compute_sample_metrics(a, b, None, metrics=("fid", "kid", "precision", "recall"), kid_subsets=10)
    assert out["fid"] < 0.1 and abs(out["kid"]) < 0.05 and out["precision"] > 0.8 and out["recall"] > 0.8
    _one_line_error(lambda: sm.compute_sample_metrics(a, b, None), "'is'")
    net = digits_net[0]
    imgs = torch.rand(10, 1, 8, 8)
    _one_line_error(lambda: sm.compute_sample_metrics((imgs * 255).byte(), imgs, net), "dtype")
    _one_line_error(lambda: sm.compute_sample_metrics(imgs * 2, imgs, net), "[0, 1]")
    _one_line_error(lambda: sm.compute_sample_metrics(imgs, torch.rand(10, 1, 9, 9), net), "shape")
    _one_line_error(lambda: sm.compute_sample_metrics(imgs, imgs, net, metrics=("fld",)), "unknown")
    _one_line_error(lambda: sm.compute_sample_metrics(torch.rand(10, 3, 8, 8), torch.rand(10, 3, 8, 8), net,
                                                      metrics=("fid",)), "feature net expects")


# ------------------------------------------------------------------------------ feature nets
def test_to_unit_images_matches_preprocess(digits):
    raw = digits.test.x[:50]
    x = fm.to_unit_images(digits, raw)
    assert x.dtype == torch.float32 and x.shape == raw.shape
    assert torch.allclose(x, digits.preprocess.to_unit(digits.preprocess(raw)), atol=1e-6)


def test_feature_net_accuracy_info_and_cache(digits, digits_net, monkeypatch):
    net, info, cache = digits_net
    assert info["test_accuracy"] > 0.85
    assert info["name"] == "energyvae-classifier" and info["dataset"] == "digits" and not info["cached"]
    assert info["architecture"]["kind"] == "conv" and info["training"]["steps"] == STEPS
    json.dumps(info)
    x = fm.to_unit_images(digits, digits.test.x[:20])
    assert net.features(x).shape == (20, 128) and net.logits(x).shape == (20, 10)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")
    assert info["path"] == str(cache / files[1])

    def boom(*a, **k):
        raise AssertionError("trained again instead of loading the cache")
    monkeypatch.setattr(fm, "train_feature_net", boom)
    net2, info2 = fm.get_feature_net(digits, cache_dir=cache, progress=False, train_steps=STEPS)
    assert info2["cached"] and info2["hash"] == info["hash"] and info2["test_accuracy"] == info["test_accuracy"]
    assert torch.equal(net2.features(x), net.features(x)) and torch.equal(net2.logits(x), net.logits(x))
    # the default cache location follows $ENERGYVAE_CACHE
    monkeypatch.setenv("ENERGYVAE_CACHE", str(cache))
    assert fm.default_cache_dir() == cache
    assert fm.get_feature_net(digits, progress=False, train_steps=STEPS)[1]["cached"]


def test_feature_net_hash_changes_with_seed_steps_and_data(digits):
    arch = fm.architecture_for(digits.shape, 10)
    hp = fm.TrainSpec.default_for(arch, len(digits.train))
    h0 = fm.feature_net_hash(digits, arch, hp, 0)
    assert h0 == fm.feature_net_hash(digits, arch, hp, 0)
    assert h0 != fm.feature_net_hash(digits, arch, hp, 1)
    assert h0 != fm.feature_net_hash(digits, arch, dataclasses.replace(hp, steps=hp.steps + 1), 0)
    other = load_data(DataConfig(name="digits", split_seed=1))
    assert h0 != fm.feature_net_hash(other, arch, hp, 0)
    assert hp.steps == 1000 and hp.max_shift == 1


def test_feature_net_training_is_deterministic(digits, tmp_path):
    a, ia = fm.get_feature_net(digits, cache_dir=tmp_path / "a", progress=False, train_steps=30, seed=5)
    b, ib = fm.get_feature_net(digits, cache_dir=tmp_path / "b", progress=False, train_steps=30, seed=5)
    assert ia["hash"] == ib["hash"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")]


def test_feature_net_vectors_labelled_and_unlabelled(tmp_path):
    g = np.random.default_rng(0)
    y = g.integers(0, 3, 600)
    x = (g.standard_normal((600, 4)) + 3 * np.eye(4)[y]).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=x, y=y)
    data = load_data(DataConfig(name="array", path=str(tmp_path / "v.npz")))
    net, info = fm.get_feature_net(data, cache_dir=tmp_path / "c", progress=False, train_steps=200)
    assert info["architecture"]["kind"] == "mlp" and info["test_accuracy"] > 0.8
    xs = fm.to_unit_images(data, data.test.x)
    assert net.features(xs).shape == (len(xs), 128) and net.logits(xs).shape == (len(xs), 3)
    out = sm.compute_sample_metrics(xs, fm.to_unit_images(data, data.val.x), net, kid_subsets=5)
    assert np.isfinite([out[k] for k in ("fid", "kid", "is", "precision", "recall")]).all()

    toy = load_data(DataConfig(name="moons", n_points=300))
    raw, rinfo = fm.get_feature_net(toy, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(raw, fm.RawFeatures) and rinfo["name"] == "raw-coordinates"
    assert torch.equal(raw.features(toy.test.x), toy.test.x)


def test_feature_net_needs_labels_for_images(digits, tmp_path):
    unlabelled = dataclasses.replace(digits, train=Split(digits.train.x, None))
    _one_line_error(lambda: fm.get_feature_net(unlabelled, cache_dir=tmp_path, progress=False),
                    "need labels", "Inception")
    assert not list(tmp_path.iterdir())
    _one_line_error(lambda: fm.architecture_for((1, 70, 70), 10), "8..64")


# ------------------------------------------------------------------------------ Inception (optional)
def test_inception_clear_errors(tmp_path):
    _one_line_error(lambda: fm.inception_feature_extractor(tmp_path / "missing.pth"), "not found")
    fake_weights = tmp_path / "weights.pth"
    fake_weights.write_bytes(b"not really weights")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        _one_line_error(lambda: fm.inception_feature_extractor(fake_weights), "torch-fidelity")
    else:   # the extra is installed: a bad file is still a clear error
        _one_line_error(lambda: fm.inception_feature_extractor(fake_weights), "cannot load")


def test_inception_features_with_real_weights():
    pytest.importorskip("torch_fidelity")
    path = os.environ.get("ENERGYVAE_INCEPTION_WEIGHTS")
    if not path or not os.path.isfile(path):
        pytest.skip("set ENERGYVAE_INCEPTION_WEIGHTS to torch-fidelity's Inception-v3 weights file")
    net, info = fm.inception_feature_extractor(path)
    x = torch.rand(4, 1, 28, 28)
    assert net.features(x).shape == (4, 2048) and net.logits(x).shape == (4, 1008)
    assert info["name"] == "inception-v3-compat" and len(info["hash"]) == 64
