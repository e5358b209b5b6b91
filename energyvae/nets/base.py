"""The encoder and decoder registries (their contract is in :mod:`energyvae.nets`)."""
from ..registry import Registry

ENCODERS = Registry("encoder")
DECODERS = Registry("decoder")
