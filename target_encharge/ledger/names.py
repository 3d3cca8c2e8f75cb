"""The ledger's table names and the schema version this target writes: all the driver's own SQL needs, without
SQLAlchemy (the tables themselves are in schema.py)."""

SCHEMA_VERSION = 8
ACCOUNTS_SINCE = 3  # the schema version that made the accounts table
LEASES_SINCE = 6  # the schema version that made the leases table (issue 23)
ENCHARGE_IDS_SINCE = 8  # the schema version that made the Encharge ids table (issue 24)
MIRROR_SINCE = 5  # the schema version that made mirror's snapshot tables (issue 22)

META = "encharge_ledger_meta"
SCOPES = "encharge_ledger_scopes"
DELIVERIES = "encharge_ledger_deliveries"
FAILURES = "encharge_ledger_failures"
ACCOUNTS = "encharge_ledger_accounts"
LEASES = "encharge_ledger_leases"
ENCHARGE_IDS = "encharge_ledger_encharge_ids"
RUNS = "encharge_ledger_runs"  # issue 25: the run history
RUNS_SINCE = 7  # the schema version that made the runs table

# version 5 (issue 22): mirror's snapshots on the ledger
SNAPSHOTS = "encharge_ledger_snapshots"
SEEN = "encharge_ledger_seen"
REMOVALS = "encharge_ledger_removals"
MIRRORS = "encharge_ledger_mirrors"
