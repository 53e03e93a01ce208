"""Surrogate networks of GLANCE: concept encoder, surrogate head, generator and discriminator.

Pure ``nn.Module``s and functions (no I/O, logging or optimiser state); training lives in
``glance.training``.
"""

from __future__ import annotations

from glance.surrogate.discriminator import Discriminator, minibatch_stddev
from glance.surrogate.encoder import ConceptEncoder, SurrogateHead
from glance.surrogate.generator import (
    Generator,
    MappingNetwork,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    fit_to_resolution,
)
from glance.surrogate.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    check_shape,
    modulated_conv2d,
    preferred_modconv_impl,
)

__all__ = [
    "ConceptEncoder",
    "SurrogateHead",
    "MappingNetwork",
    "SynthesisLayer",
    "SynthesisBlock",
    "SynthesisNetwork",
    "Generator",
    "Discriminator",
    "minibatch_stddev",
    "modulated_conv2d",
    "preferred_modconv_impl",
    "fit_to_resolution",
    "check_shape",
    "EqualizedLinear",
    "EqualizedConv2d",
]
