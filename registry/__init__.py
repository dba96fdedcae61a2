"""The only code that talks to the MLflow registry: versions, aliases, history."""

from registry.client import (
    ALIASES,
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    AliasesMoved,
    Registry,
    RegistryError,
    VersionInfo,
)
from registry.history import AliasMove, HistoryPage, PromotionHistory
from registry.ledger import new_decision_id

__all__ = [
    "ALIASES",
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "AliasMove",
    "AliasesMoved",
    "HistoryPage",
    "PromotionHistory",
    "Registry",
    "RegistryError",
    "VersionInfo",
    "new_decision_id",
]
