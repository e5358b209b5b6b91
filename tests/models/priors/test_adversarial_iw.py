"""EBM prior schemes of paper 002: adversarial CD (Alg. 2) and the IW partition estimate (Eq. 5)."""
import math

import pytest
import torch
from torch import nn

from energyvae.models.posterior import DiagGaussian
from energyvae.models.priors.ebm import LATENT_SAMPLERS, PRIOR_SCHEMES, EBMPrior

LOG_2PI = math.log(2 * math.pi)


class GaussianEnergy(nn.Module):
    """E(z) = 1/2 (z - c)^T P (z - c) + 1/2 (m ln 2 pi - ln det P): exactly -ln N(z; c, P^-1), Z = 1."""

    def __init__(self, center, cov):
        super().__init__()
        self.center = nn.Parameter(torch.as_tensor(center, dtype=torch.float32))
        self.register_buffer("precision", torch.linalg.inv(torch.as_tensor(cov, dtype=torch.float32)))

    def forward(self, z):
        d = z - self.center
        m = d.shape[-1]
        return 0.5 * ((d @ self.precision) * d).sum(-1) + 0.5 * (m * LOG_2PI - torch.logdet(self.precision))


def ebm(energy, scheme):
    return EBMPrior(energy, PRIOR_SCHEMES.build(scheme, latent_dim=2, energy=energy), LATENT_SAMPLERS.build("langevin", latent_dim=2), 2)   # unused: the schemes sample


def adversarial_prior(**params):
    energy = GaussianEnergy([1.0, -0.5], [[1.0, 0.6], [0.6, 0.8]])
    return ebm(energy, {"name": "adversarial", "transforms": 2, "hidden": [16], **params})


def state(n=256):
    return {"z_posterior": torch.randn(n, 2) + 2.0}


def perturb(module, scale=0.2):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def apply_update(prior, name, st):
    """One update as the trainer runs it: zero its optimizer's grads, backward, step."""
    (spec,) = [u for u in prior.updates() if u.name == name]
    opt = torch.optim.Adam(spec.params, lr=spec.lr)
    opt.zero_grad(set_to_none=True)
    loss, logs = prior.update_loss(name, None, st)
    loss.backward()
    opt.step()
    return loss, logs


# ------------------------------------------------------------------------------ adversarial
def test_entropy_estimate_is_the_flows_exact_log_density():
    prior = adversarial_prior()
    q_c = prior.scheme.proposal
    # at initialisation the IAF is the identity: q_c = N(0, I) sample by sample
    st = state(4096)
    torch.manual_seed(1)
    loss, logs = prior.update_loss("proposal", None, st)
    torch.manual_seed(1)
    z = q_c().rsample((4096,))
    log_n = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
    assert logs["entropy"].item() == pytest.approx(-log_n.mean().item(), abs=1e-5)
    assert logs["entropy"].item() == pytest.approx(1 + LOG_2PI, abs=0.08)     # H(N(0, I_2))
    # after moving the flow: the estimate equals -mean ln q_c(z) computed by the inverse pass
    perturb(q_c)
    st = state()
    torch.manual_seed(2)
    loss, logs = prior.update_loss("proposal", None, st)
    torch.manual_seed(2)
    z = q_c().rsample((256,))
    with torch.no_grad():
        log_q = q_c().log_prob(z)
        e = prior.energy(z)
    assert logs["entropy"].item() == pytest.approx(-log_q.mean().item(), rel=1e-4, abs=1e-4)
    assert loss.item() == pytest.approx((e + log_q).mean().item(), rel=1e-4, abs=1e-4)
    assert logs["energy"].item() == pytest.approx(e.mean().item(), rel=1e-5)


def test_updates_step_only_their_own_parameters():
    prior = adversarial_prior()
    perturb(prior.scheme.proposal)           # off the identity, so every flow weight gets a gradient
    specs = {u.name: u for u in prior.updates()}
    assert [(u.name, u.order) for u in prior.updates()] == [("prior", 1), ("proposal", 2)]
    energy_ids = {id(p) for p in prior.energy_net.parameters()}
    flow_ids = {id(p) for p in prior.scheme.proposal.parameters()}
    assert {id(p) for p in specs["prior"].params} == energy_ids
    assert {id(p) for p in specs["proposal"].params} == flow_ids
    for name, own in (("proposal", flow_ids), ("prior", energy_ids)):
        before = {n: p.detach().clone() for n, p in prior.named_parameters()}
        _, logs = apply_update(prior, name, state())
        changed = {id(p) for n, p in prior.named_parameters() if not torch.equal(p, before[n])}
        assert changed == own, name
    assert set(logs) == {"energy_pos", "energy_neg"}


def test_proposal_fits_a_gaussian_energy():
    """400 proposal steps (Adam 1e-2, then 1e-3 for the last 100) on E = -ln N(mu, S): q_c's
    mean and covariance entries within 0.06 of the target's (20000 samples; seeds 0-5 give
    <= 0.03), and the loss E + ln q_c near its optimum -ln Z = 0 (Eq. 9, KL(q_c || p) = 0)."""
    prior = adversarial_prior(proposal_lr=1e-2, negatives=256)
    (spec,) = [u for u in prior.updates() if u.name == "proposal"]
    opt = torch.optim.Adam(spec.params, lr=spec.lr)
    for step in range(400):
        if step == 300:
            opt.param_groups[0]["lr"] = 1e-3
        opt.zero_grad(set_to_none=True)
        loss, logs = prior.update_loss("proposal", None, state())
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = prior.scheme.proposal().sample((20000,))
    assert (z.mean(0) - torch.tensor([1.0, -0.5])).abs().max() < 0.06
    assert (torch.cov(z.T) - torch.tensor([[1.0, 0.6], [0.6, 0.8]])).abs().max() < 0.06
    assert abs(loss.item()) < 0.02


def test_sample_from_choices():
    assert adversarial_prior().scheme.sample(None, 5) is None            # the prior's sampler
    prior = adversarial_prior(sample_from="proposal")
    assert prior.sample(7).shape == (7, 2)


# ----------------------------------------------------------------------------------------- IW
def test_iw_kl_is_a_lower_estimate_that_tends_to_the_exact_kl():
    """E = ||z||^2/2 + ln 2pi (Z = 1): the IW term estimates KL(q || N(0, I)) from below in
    expectation, and within 0.01 nats at K = 512 (mean over 2000 replicas of one q)."""
    energy = GaussianEnergy([0.0, 0.0], torch.eye(2))
    B = 2000
    q = DiagGaussian(torch.tensor([0.5, -0.3]).expand(B, 2), torch.tensor([0.9, 1.3]).expand(B, 2))
    exact = q.kl_standard_normal()[0].item()
    est = {}
    for k in (2, 8, 64, 512):
        kl = ebm(energy, {"name": "iw", "samples": k}).kl(q).detach()
        assert kl.shape == (B,)
        est[k] = kl.mean().item()
        assert est[k] < exact + 3 * kl.std().item() / math.sqrt(B)
    assert est[2] < est[8] < est[64] < exact
    assert exact - est[2] > 0.05
    assert abs(est[512] - exact) < 0.01


def test_iw_gradient_reaches_the_energy_and_matches_eq7():
    """d KL / d c at c = 0 is E_q[-(z - c)] - E_p[-(z - c)] = -mu (Eq. 7, with Z independent of c)."""
    energy = GaussianEnergy([0.0, 0.0], torch.eye(2))
    prior = ebm(energy, {"name": "iw", "samples": 256})
    assert prior.trained_by_elbo and prior.updates() == []
    mu = torch.tensor([0.5, -0.3])
    q = DiagGaussian(mu.expand(500, 2), torch.tensor([0.9, 1.3]).expand(500, 2))
    prior.kl(q).mean().backward()
    assert (energy.center.grad + mu).abs().max() < 0.05


def test_iw_energy_is_stepped_by_the_vae_update():
    """With a learned-std posterior, the VAE update owns the energy's parameters and its loss
    (through the IW KL term) gives them gradients."""
    from energyvae.config import build_config
    from energyvae.models import build_model

    cfg = build_config({"model": {
        "latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]},
        "reconstruction": {"name": "gaussian"}, "posterior": {"name": "gaussian"},
        "prior": {"name": "ebm", "energy": {"name": "grbm", "hidden": 4},
                  "scheme": {"name": "iw", "samples": 4}, "sampler": {"name": "langevin", "steps": 2}}}})
    model = build_model(cfg.model, (2,), "vector", None)
    (vae,) = model.updates()
    energy = list(model.prior.energy_net.parameters())
    assert {id(p) for p in energy} <= {id(p) for p in vae.params}
    loss, logs = model("vae", torch.randn(16, 2), {})
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in energy)
    assert any(p.grad.abs().sum() > 0 for p in energy)


# -------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("scheme,posterior", [
    ("{name: adversarial, transforms: 2, hidden: [16], sample_from: proposal+sampler}", "gaussian"),
    ("{name: iw, samples: 8}", "fixed"),
])
def test_vae_with_ebm_prior_trains(tmp_path, scheme, posterior):
    from energyvae.config import load_config
    from energyvae.commands.train import train_run
    from energyvae.runs import load_run

    cfg = load_config("configs/toy2d_vae.yaml", [
        f"run.dir={tmp_path}", "data.n_points=1000", f"model.posterior={{name: {posterior}}}",
        f"model.prior={{name: ebm, energy: {{name: grbm, hidden: 8}}, scheme: {scheme}, "
        f"sampler: {{name: langevin, steps: 10}}}}",
        "train.steps=30", "train.batch_size=64", "train.eval_every=30", "train.checkpoint_every=30",
        "train.progress=false", "eval.iw_samples=0", "eval.n_samples=16", "eval.n_reconstructions=4"])
    out = train_run(cfg)
    assert math.isfinite(out["metrics"]["test"]["loss"])
    if "adversarial" in scheme:
        from energyvae.train.logger import read_metrics
        train = [r for r in read_metrics(tmp_path) if "proposal/entropy" in r]
        assert train and {"prior/energy_pos", "prior/energy_neg", "proposal/energy"} <= set(train[-1])
    _, _, model = load_run(tmp_path)
    x = model.sample(16)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
