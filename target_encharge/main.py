"""The `target-encharge` command: signals are listened for before the slow imports, then the target runs."""

from __future__ import annotations

from target_encharge import early


def main() -> None:
    early.listen()
    from target_encharge.target import TargetEncharge  # after listening: this import is the slow part

    TargetEncharge.cli()
