"""The only code that talks to the MLflow registry: versions, aliases, history."""

from registry.client import (
    ALIASES,
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    Registry,
    RegistryError,
    VersionInfo,
)
from registry.history import AliasMove, PromotionHistory

__all__ = [
    "ALIASES",
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "AliasMove",
    "PromotionHistory",
    "Registry",
    "RegistryError",
    "VersionInfo",
]
