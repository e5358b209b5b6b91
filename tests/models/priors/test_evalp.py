"""EVaLP (paper 003): sampler networks and their entropies, the scheme's updates, generation
without MCMC, two-stage training, the prior-hole metric."""
import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from energyvae.config import build_config, load_config
from energyvae.errors import ConfigError
from energyvae.evaluation.prior_holes import log_aggregate_posterior, prior_hole_metrics
from energyvae.models import build_model
from energyvae.models.posterior import DiagGaussian
from energyvae.models.priors.ebm import LATENT_SAMPLERS, PRIOR_SCHEMES, EBMPrior
from energyvae.models.priors.sampler_nets import FlowSampler, ImplicitSampler, knn_entropy

LOG_2PI = math.log(2 * math.pi)


def gaussian_entropy(m, log_det=0.0):
    return 0.5 * m * (1 + LOG_2PI) + log_det


# ------------------------------------------------------------------------ sampler entropies
@pytest.mark.parametrize("m", [1, 2, 5])
def test_knn_entropy_of_gaussians(m):
    """k = 3, n = 1000, mean of 4 draws: within 0.15 nats of the true entropy of N(0, s^2 I) for
    s in (0.5, 1, 3) (observed bias: |.| < 0.1 up to m = 5); the estimate is differentiable."""
    for s in (0.5, 1.0, 3.0):
        est = torch.stack([knn_entropy(s * torch.randn(1000, m), k=3) for _ in range(4)]).mean()
        assert est.item() == pytest.approx(gaussian_entropy(m, m * math.log(s)), abs=0.15), s
    z = torch.randn(300, m, requires_grad=True)
    knn_entropy(z).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_implicit_sampler_entropy_of_a_linear_generator():
    """hidden = []: S is z = W e + b, a Gaussian of entropy H(N(0, I)) + ln |det W|; here
    W = Q diag(0.5, 1, 2) with Q a random rotation (moderate anisotropy, see sampler_nets.py)."""
    net = ImplicitSampler(3, 3, [], "leaky_relu", k=3)
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    with torch.no_grad():
        net.net.body[0].weight.copy_(q @ torch.diag(torch.tensor([0.5, 1.0, 2.0])))
    log_det = 0.0                                          # ln(0.5 * 1 * 2)
    est = torch.stack([net.rsample_and_entropy(1000)[1] for _ in range(4)]).mean().item()
    assert est == pytest.approx(gaussian_entropy(3, log_det), abs=0.15)


def test_flow_entropy_is_its_exact_log_density():
    flow = FlowSampler(3, transforms=2, hidden=[16])
    torch.manual_seed(1)
    z, h = flow.rsample_and_entropy(4000)            # identity at init: S = N(0, I)
    log_n = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
    assert h.item() == pytest.approx(-log_n.mean().item(), abs=1e-5)
    assert h.item() == pytest.approx(gaussian_entropy(3), abs=0.06)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    z, h = flow.rsample_and_entropy(500)
    assert h.requires_grad
    with torch.no_grad():
        assert h.item() == pytest.approx(-flow.flow().log_prob(z).mean().item(), rel=1e-4, abs=1e-4)


# ------------------------------------------------------------------- the sampler fits an EBM
class TwoGaussians(nn.Module):
    """E(z) = -ln(N(z; (-1.5, 0), 0.5^2 I) + N(z; (1.5, 0), 0.5^2 I)) + const."""
    centers = torch.tensor([[-1.5, 0.0], [1.5, 0.0]])

    def forward(self, z):
        return -torch.logsumexp(-0.5 * (z[..., None, :] - self.centers).pow(2).sum(-1) / 0.25, -1)

    def exact(self, n):
        return self.centers[torch.randint(2, (n,))] + 0.5 * torch.randn(n, 2)


def mmd_permutation_test(x, y, perms=200):
    """Unbiased MMD^2 (Gaussian kernel, median bandwidth) and its 95 % permutation quantile."""
    n, xy = len(x), torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)
    K = torch.exp(-d2 / d2.median())

    def stat(idx):
        a, b = idx[:n], idx[n:]
        off = lambda M: (M.sum() - M.diagonal().sum()) / (n * (n - 1))
        return off(K[a][:, a]) + off(K[b][:, b]) - 2 * K[a][:, b].mean()
    null = torch.stack([stat(torch.randperm(2 * n)) for _ in range(perms)])
    return stat(torch.arange(2 * n)).item(), torch.quantile(null, 0.95).item()


def ebm(energy, m=2, **scheme):
    scheme = PRIOR_SCHEMES.build({"name": "evalp", **scheme}, latent_dim=m)
    return EBMPrior(energy, scheme, LATENT_SAMPLERS.build("langevin", latent_dim=m), m)   # unused: S samples


@pytest.mark.parametrize("net,lr,steps", [("flow", 1e-2, 400), ("implicit", 3e-3, 600)])
def test_trained_sampler_matches_the_energy(net, lr, steps):
    """Only the ``sampler`` update on a fixed two-Gaussian energy: 500 generated samples pass an
    MMD permutation test at 5 % against exact ones (untrained S = N(0, I) fails it), and the
    bound E[-E] + H approaches ln Z = ln(2 pi 0.25 * 2) = ln pi."""
    torch.manual_seed(0)
    target = TwoGaussians()
    prior = ebm(target, sampler_net=net, hidden=[64, 64] if net == "implicit" else [32, 32], negatives=256)
    y = target.exact(500)
    untrained = mmd_permutation_test(prior.sample(500), y)
    assert untrained[0] > untrained[1]
    (spec,) = [u for u in prior.updates() if u.name == "sampler"]
    assert spec.order == 2 and spec.betas == (0.5, 0.999)
    opt = torch.optim.Adam(spec.params, lr=lr)
    bounds = []
    for step in range(steps):
        if step == 3 * steps // 4:
            opt.param_groups[0]["lr"] = lr / 10
        opt.zero_grad(set_to_none=True)
        loss, logs = prior.update_loss("sampler", None, {"z_posterior": torch.zeros(8, 2)})
        loss.backward()
        opt.step()
        bounds.append(logs["log_z_bound"].item())
    stat, threshold = mmd_permutation_test(prior.sample(500), y)
    assert stat < threshold
    assert sum(bounds[-50:]) / 50 == pytest.approx(math.log(math.pi), abs=0.15)


# ------------------------------------------------------------------------ the energy update
def test_energy_update_and_gradient_penalty():
    torch.manual_seed(0)
    energy = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0))
    z_pos = torch.randn(64, 2) + 1
    for at in ("positives", "negatives", "both"):
        prior = ebm(energy, gradient_penalty=10.0, penalty_at=at, negatives=32)
        torch.manual_seed(1)
        loss, logs = prior.update_loss("prior", None, {"z_posterior": z_pos})
        torch.manual_seed(1)
        z_neg = prior.scheme.net.sample(32)
        pts = {"positives": [z_pos], "negatives": [z_neg], "both": [z_pos, z_neg]}[at]
        zs = torch.cat(pts).requires_grad_(True)
        (g,) = torch.autograd.grad(energy(zs).sum(), zs)
        cd = energy(z_pos).mean() - energy(z_neg).mean()
        assert logs["grad_penalty"].item() == pytest.approx(g.pow(2).sum(-1).mean().item(), rel=1e-5)
        assert loss.item() == pytest.approx(cd.item() + 10 * logs["grad_penalty"].item(), rel=1e-5)
        loss.backward()                                  # the penalty is differentiable in the weights
        assert all(p.grad is not None for p in energy.parameters())
        energy.zero_grad()
    specs = ebm(energy).updates()
    assert [(u.name, u.order, u.lr, u.betas) for u in specs] == [
        ("prior", 1, 5e-5, (0.5, 0.999)), ("sampler", 2, 5e-4, (0.5, 0.999))]


# ------------------------------------------------------------------- generation: no MCMC
def tiny_model(**scheme):
    cfg = build_config({"model": {
        "latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]},
        "reconstruction": {"name": "gaussian"},
        "prior": {"name": "ebm", "energy": {"name": "mlp", "hidden": [16]},
                  "scheme": {"name": "evalp", **scheme}, "sampler": {"name": "langevin", "steps": 7}}}})
    return build_model(cfg.model, (2,), "vector", None)


@pytest.mark.parametrize("refine", [0, 3])
def test_generation_calls_the_energy_only_for_refinement(refine):
    model = tiny_model(refine_steps=refine)
    calls = []
    model.prior.energy_net.register_forward_hook(
        lambda mod, args, out: calls.append(torch.is_grad_enabled() and args[0].requires_grad))
    before = copy.deepcopy(model.state_dict())
    x = model.sample(16)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    assert calls == [True] * refine                       # k gradient evaluations, no more
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_two_stage_updates_and_encoding_without_the_vae_update():
    model = tiny_model(two_stage_at=5)
    assert [(u.name, u.start, u.stop) for u in model.updates()] == [
        ("vae", 0, 5), ("prior", 5, None), ("sampler", 5, None)]
    x = torch.randn(1, 2).expand(4000, 2)
    state = {}
    loss, _ = model("prior", x, state)                 # no VAE update ran: the scheme encodes x
    q = model.encode(x[:1])
    z = state["z_posterior"]
    assert z.shape == (4000, 2) and not z.requires_grad and torch.isfinite(loss)
    assert torch.allclose(z.mean(0), q.mean[0], atol=0.1 * q.std.max().item())
    assert torch.allclose(z.std(0), q.std[0], rtol=0.1)
    ema = copy.deepcopy(model)                         # copies (the EMA model) rebind to themselves
    assert ema.prior.scheme.bound_model is ema and model.prior.scheme.bound_model is model


# ---------------------------------------------------------------------------- prior holes
class MixturePrior(nn.Module):
    """Samples of 1/N sum_i N(mean_i, std_i^2) (+ shift)."""

    def __init__(self, mean, std, shift=0.0):
        super().__init__()
        self.mean, self.std, self.shift = mean, std, shift

    def sample(self, n):
        i = torch.randint(len(self.mean), (n,))
        return self.mean[i] + self.std[i] * torch.randn(n, self.mean.shape[1]) + self.shift


def test_log_aggregate_posterior_matches_the_direct_mixture():
    mean, std, z = torch.randn(7, 3), torch.rand(7, 3) + 0.2, torch.randn(11, 3)
    direct = torch.logsumexp(DiagGaussian(mean, std).log_prob(z[:, None, :]), 1) - math.log(7)
    assert torch.allclose(log_aggregate_posterior(z, mean, std, batch=4), direct.double(), atol=1e-5)


def test_prior_hole_metrics():
    torch.manual_seed(0)
    model = tiny_model()
    data = SimpleNamespace(train=SimpleNamespace(x=torch.randn(400, 2) * 3), preprocess=lambda x: x)
    with torch.no_grad():
        q = model.encode(data.train.x)
    model.prior = MixturePrior(q.mean, q.std)              # p = q_agg of the same 400 points
    m = prior_hole_metrics(model, data, n_prior=2000, n_data=400, seed=1)
    assert abs(m["log_q_agg_gap"]) < 0.15 and m["hole_fraction"] < 0.03
    assert m["n_prior"] == 2000 and m["n_data"] == 400
    model.prior = MixturePrior(q.mean, q.std, shift=5.0)   # p far from q_agg
    m = prior_hole_metrics(model, data, n_prior=2000, n_data=400, seed=1)
    assert m["log_q_agg_gap"] > 5 and m["hole_fraction"] > 0.9


# ---------------------------------------------------------------------------- end to end
def toy_cfg(run_dir, scheme, steps=40, every=40):
    return load_config("configs/toy2d_vae.yaml", [
        f"run.dir={run_dir}", "data.n_points=1000",
        "model.prior={name: ebm, energy: {name: mlp, hidden: [32, 32]}, "
        f"scheme: {{name: evalp, hidden: [16], transforms: 2, lr: 1.0e-3, {scheme}}}, "
        "sampler: {name: langevin, steps: 5}}",
        f"train.steps={steps}", "train.batch_size=64", f"train.eval_every={every}",
        f"train.checkpoint_every={every}", "train.log_every=5", "train.progress=false",
        "eval.iw_samples=0", "eval.n_samples=16", "eval.n_reconstructions=4"])


def test_joint_training_end_to_end(tmp_path):
    from energyvae.commands.train import train_run
    from energyvae.runs import load_run
    from energyvae.train.logger import read_metrics

    out = train_run(toy_cfg(tmp_path, "sampler_net: implicit, gradient_penalty: 1.0"))
    assert math.isfinite(out["metrics"]["test"]["loss"])
    last = [r for r in read_metrics(tmp_path) if "sampler/entropy" in r][-1]
    assert {"loss", "prior/cd_loss", "prior/grad_penalty", "sampler/log_z_bound"} <= set(last)
    _, _, model = load_run(tmp_path)
    assert model.prior.scheme.kl(model.prior, None) is None            # joint mode: the ALB term
    x = model.sample(16)
    assert x.shape == (16, 2) and torch.isfinite(x).all()


def test_two_stage_freezes_the_vae_and_resumes_exactly(tmp_path, monkeypatch, kill_training_at):
    """two_stage_at = 20 of 40 steps: VAE weights change only before step 20 (with the N(0, I) KL),
    energy and sampler only from step 20 on; a run killed at step 15 and resumed from its step-10
    checkpoint (crossing the switch) ends bit-identical to the uninterrupted one."""
    from energyvae.runs import prepare
    from energyvae.train import Trainer

    def run(cfg, resume=False):
        data, model = prepare(cfg)
        trainer = Trainer(cfg, model, data, resume=resume)
        trainer.fit()
        return trainer

    original = Trainer.train_step
    snaps, kls = [], []

    def recording(self, x):
        snaps.append({k: v.clone() for k, v in self.model.named_parameters()})
        kls.append(self.model.prior.kl(self.model.encode(x)))
        return original(self, x)
    monkeypatch.setattr(Trainer, "train_step", recording)
    ref = run(toy_cfg(tmp_path / "ref", "two_stage_at: 20", every=10))
    monkeypatch.setattr(Trainer, "train_step", original)
    snaps.append(dict(ref.model.named_parameters()))

    own = lambda k: k.startswith(("prior.energy_net", "prior.scheme"))
    for t in range(40):
        moved = {k for k, v in snaps[t + 1].items() if not torch.equal(v, snaps[t][k])}
        assert moved and all(own(k) == (t >= 20) for k in moved), t
        assert (kls[t] is not None) == (t < 20)
    assert int(ref.model.prior.scheme.vae_steps) == 20

    cfg = toy_cfg(tmp_path / "killed", "two_stage_at: 20", every=10)
    kill_training_at(15, lambda: run(cfg))
    resumed = run(cfg, resume=True)
    for (k, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    lines = lambda d: [{k: v for k, v in json.loads(l).items() if k != "sec_per_step"}
                       for l in (d / "metrics.jsonl").read_text().splitlines()]
    assert lines(tmp_path / "ref") == lines(tmp_path / "killed")
    assert resumed.model.sample(16).shape == (16, 2)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("scheme,message", [
    ({"sampler_lr": 0}, r"model\.prior\.scheme: sampler_lr: must be > 0"),
    ({"sampler_net": "gan"}, r"model\.prior\.scheme\.sampler_net: expected one of"),
    ({"entropy_weight": -1}, r"model\.prior\.scheme: entropy_weight"),
    ({"gradient_penalty": -1}, r"model\.prior\.scheme: gradient_penalty"),
    ({"sampler_net": "implicit", "knn": 5, "negatives": 5}, r"model\.prior\.scheme: negatives: must be >= 6"),
    ({"refine_steps": -1}, r"model\.prior\.scheme: refine_steps"),
    ({"two_stage_at": 0}, r"model\.prior\.scheme: two_stage_at"),
    ({"betas": [0.5, 1.0]}, r"model\.prior\.scheme: betas"),
    ({"bogus": 1}, r"model\.prior\.scheme\.bogus: unknown key"),
    ({"sampler_net": "implicit", "noise_dim": 1}, r"model\.prior\.scheme\.noise_dim: must be >= the latent"),
])
def test_bad_params_are_config_errors(scheme, message):
    with pytest.raises(ConfigError, match=message):
        tiny_model(**scheme)
