"""The only code that talks to the MLflow registry: versions, aliases, history."""

from registry.client import (
    CANARY_SHARE_TAG,
    AliasesMoved,
    Registry,
    RegistryError,
    VersionInfo,
    parse_canary_share,
    version_number,
)
from registry.history import AliasMove, HistoryPage, PromotionHistory
from registry.ledger import new_decision_id
from registry.tags import ROLLED_BACK_TAG

__all__ = [
    "CANARY_SHARE_TAG",
    "ROLLED_BACK_TAG",
    "AliasMove",
    "AliasesMoved",
    "HistoryPage",
    "PromotionHistory",
    "Registry",
    "RegistryError",
    "VersionInfo",
    "new_decision_id",
    "parse_canary_share",
    "version_number",
]
