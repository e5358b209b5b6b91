"""Every registered part of every registry keeps its contract (energyvae.models.contracts), and
the check fails for parts that break it."""
import pytest
import torch

import energyvae.models  # noqa: F401  (registers the built-ins)
from energyvae.models.base import PRIORS
from energyvae.models.contracts import BASES, check_part
from energyvae.models.priors import Prior, StandardNormal
from energyvae.registry import REGISTRIES

ENTRIES = [(kind, name) for kind in sorted(REGISTRIES) for name in REGISTRIES[kind].names()]


def test_every_registry_has_a_contract():
    assert set(REGISTRIES) <= set(BASES), set(REGISTRIES) - set(BASES)


@pytest.mark.parametrize("kind,name", ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_registered_part_keeps_its_contract(kind, name):
    assert check_part(kind, name) == []


class _WrongShape(Prior):
    def log_prob(self, z):
        return -0.5 * z.pow(2)                  # forgot to sum over the latent dimension

    def sample(self, n):
        return torch.randn(n, self.latent_dim)


class _NotAPrior(torch.nn.Module):             # the old duck-typed form: no base class
    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z):
        return -0.5 * z.pow(2).sum(-1)

    def sample(self, n):
        return torch.randn(n, self.latent_dim)


@pytest.fixture
def temporary_prior():
    names = []

    def register(name, cls):
        PRIORS.register(name)(lambda p, *, latent_dim, **_: cls(latent_dim))
        names.append(name)
    yield register
    for n in names:
        PRIORS.unregister(n)


def test_the_check_fails_for_a_broken_part(temporary_prior):
    temporary_prior("_test_wrong_shape", _WrongShape)
    problems = check_part("prior", "_test_wrong_shape")
    assert problems and any("log_prob" in p or "loss" in p or "Error" in p for p in problems), problems


def test_the_check_fails_for_a_part_without_its_base(temporary_prior):
    temporary_prior("_test_not_a_prior", _NotAPrior)
    problems = check_part("prior", "_test_not_a_prior")
    assert any("does not subclass" in p for p in problems), problems


def test_a_good_plugin_part_passes(temporary_prior):
    temporary_prior("_test_normal", StandardNormal)
    assert check_part("prior", "_test_normal") == []


def test_an_abstract_method_left_out_is_refused_at_build():
    class Half(Prior):
        def log_prob(self, z):
            return -0.5 * z.pow(2).sum(-1)
    with pytest.raises(TypeError, match="abstract"):
        Half(3)
