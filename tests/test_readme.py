"""The README's module map names every module of the package, and nothing that is gone: a new module is
placed in the layout for the next person, a removed one leaves it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "target_encharge"


def _layout() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Layout, top to bottom")
    return readme[start : readme.index("Tests in `tests/`", start)]


def test_the_module_map_names_every_module_and_no_other() -> None:
    layout = _layout()
    modules = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    modules |= {p.name for p in (PACKAGE / "ledger").glob("*.py") if p.name not in ("__init__.py", "names.py")}
    named = set(re.findall(r"`([a-z_]+\.py)`", layout))
    assert modules - named == set(), "modules missing from README's layout"
    assert named - modules == set(), "README's layout names modules that do not exist"
