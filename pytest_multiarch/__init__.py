"""pytest-multiarch: verify every architecture of a multi-arch container image from pytest."""

from __future__ import annotations

from pytest_multiarch.errors import IllegalInstruction, MultiarchError
from pytest_multiarch.platforms import Platform

__all__ = ["IllegalInstruction", "MultiarchError", "Platform"]
__version__ = "0.1.0"
