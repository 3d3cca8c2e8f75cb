"""The sync ledger: what target-encharge delivered to Encharge, remembered between runs.

It knows nothing about HTTP, sinks or the target: callers say what was delivered (after a 2xx) or failed, and ask
what is known. See store.py for the interface (opened by ``SyncLedger.open``), sqlite.py and postgres.py for its
two stores, schema.py for the tables and connection.py for ``ledger_url``.
"""

from target_encharge.ledger.connection import LedgerError, mask_url
from target_encharge.ledger.fingerprint import canonical_json, fingerprint
from target_encharge.ledger.store import (
    Candidate,
    Delivered,
    DeliveryRow,
    Failure,
    Scope,
    StreamStatus,
    SyncLedger,
    WaitingFailure,
)

__all__ = [
    "Candidate",
    "Delivered",
    "DeliveryRow",
    "Failure",
    "LedgerError",
    "Scope",
    "StreamStatus",
    "SyncLedger",
    "WaitingFailure",
    "canonical_json",
    "fingerprint",
    "mask_url",
]
