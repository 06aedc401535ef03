"""Precision verification for PaddlePaddle RMSNorm kernels and the GLM4 MoE decoder layer.

The data path is spec -> inputs -> backends -> reference -> metrics -> verdict -> row ->
tables -> report. Every step below the spec is a pure function of it, so a case id or a
spec's JSON reproduces a row anywhere.
"""

__version__ = "0.1.0"
