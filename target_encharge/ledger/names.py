"""The ledger's table names and the schema version this target writes: all the driver's own SQL needs, without
SQLAlchemy (the tables themselves are in schema.py)."""

SCHEMA_VERSION = 5
ACCOUNTS_SINCE = 3  # the schema version that made the accounts table
MIRROR_SINCE = 5  # the schema version that made mirror's snapshot tables (issue 22)

META = "encharge_ledger_meta"
SCOPES = "encharge_ledger_scopes"
DELIVERIES = "encharge_ledger_deliveries"
FAILURES = "encharge_ledger_failures"
ACCOUNTS = "encharge_ledger_accounts"

# version 5 (issue 22): mirror's snapshots on the ledger
SNAPSHOTS = "encharge_ledger_snapshots"
SEEN = "encharge_ledger_seen"
REMOVALS = "encharge_ledger_removals"
MIRRORS = "encharge_ledger_mirrors"
