"""``VAE.iw_log_likelihood(x, k, prior=...)``: the IW bound scored with another prior on the
same encoder, decoder and draws (benchmarks/ncp.py compares N(0, I) with the NCP prior so)."""
import math

import torch

from energyvae.models.priors import Prior, StandardNormal
from energyvae.models.vae import VAE

M = 3


class ShiftedNormal(Prior):
    """N(shift, I) per coordinate, a normalised prior different from the model's N(0, I)."""

    def __init__(self, latent_dim: int, shift: float):
        super().__init__(latent_dim)
        self.shift = shift

    def log_prob(self, z):
        return torch.distributions.Normal(self.shift, 1.0).log_prob(z).sum(-1)

    def sample(self, n):
        return self.shift + torch.randn(n, self.latent_dim)


def small_vae() -> VAE:
    torch.manual_seed(0)
    return VAE.from_parts((1, 4, 4), M, encoder={"name": "mlp", "hidden": [16]},
                          decoder={"name": "mlp", "hidden": [16]}, reconstruction="bernoulli").eval()


def data() -> torch.Tensor:
    return torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def by_hand(model: VAE, x: torch.Tensor, k: int, chunk: int, prior) -> torch.Tensor:
    """log mean_k exp(ln p(x|z_k) + ln p(z_k) - ln q(z_k|x)), z_k ~ q(z|x) drawn chunk by chunk."""
    q = model.encode(x)
    logw = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        z = q.rsample(n)                                                   # [n, B, m]
        ll = torch.stack([model.reconstruction.log_prob(x, model.decode(z[i])) for i in range(n)])
        logw.append(ll + prior.log_prob(z) - q.log_prob(z))
    logw = torch.cat(logw, 0)
    return torch.logsumexp(logw, 0) - math.log(k)


def test_the_model_prior_given_equals_the_default_bit_for_bit():
    model, x = small_vae(), data()
    torch.manual_seed(7)
    default = model.iw_log_likelihood(x, 120, chunk=50)
    torch.manual_seed(7)
    given = model.iw_log_likelihood(x, 120, chunk=50, prior=model.prior)
    assert default.shape == (5,)
    assert torch.equal(default, given)


def test_another_prior_equals_the_hand_computed_bound():
    model, x = small_vae(), data()
    assert isinstance(model.prior, StandardNormal)
    shifted = ShiftedNormal(M, 0.75)
    for k, chunk in ((20, 50), (120, 50)):                               # one chunk, then three
        torch.manual_seed(3)
        got = model.iw_log_likelihood(x, k, chunk=chunk, prior=shifted)
        torch.manual_seed(3)
        want = by_hand(model, x, k, chunk, shifted)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.manual_seed(3)
        default = model.iw_log_likelihood(x, k, chunk=chunk)
        assert not torch.allclose(got, default)                            # the prior did score z
        torch.manual_seed(3)
        torch.testing.assert_close(default, by_hand(model, x, k, chunk, StandardNormal(M)), rtol=1e-5, atol=1e-5)


def test_the_model_keeps_its_prior():
    model, x = small_vae(), data()
    before = model.prior
    model.iw_log_likelihood(x, 10, prior=ShiftedNormal(M, -1.0))
    assert model.prior is before
