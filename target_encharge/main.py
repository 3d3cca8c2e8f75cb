"""The `target-encharge` command: signals are listened for before the slow imports, then the target runs."""

from __future__ import annotations

import gc

from target_encharge import early


def main() -> None:
    early.listen()
    # no collector passes during the imports either: they make objects that live as long as the run, which each
    # pass would walk again (4 % of the start-up's instructions); what little garbage they leave in cycles is
    # kept, as gc.freeze's documentation allows
    collecting = gc.isenabled()
    gc.disable()
    from target_encharge.target import TargetEncharge  # after listening: this import is the slow part

    # what exists now (the imports) lives as long as the run: kept out of the garbage collector's passes, which
    # would otherwise walk it again and again while records come (3 % of an unchanged rerun's instructions);
    # given back after, for a caller that runs the command in its own process (the tests)
    gc.freeze()
    if collecting:
        gc.enable()
    try:
        TargetEncharge.cli()
    finally:
        gc.unfreeze()
