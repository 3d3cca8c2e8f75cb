"""A readable summary of what arrived in the sandbox: people and their tags (and who is unsubscribed), objects,
associations, fields dropped, events, requests.

Numbers are shown with every digit that arrived (a Decimal is never rounded through a float)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Sequence

from . import exact_json

MAX_ROWS = 50
MAX_CELL = 48
#: The last column ("other fields", "properties") may run longer: it is where the details are.
MAX_LAST_CELL = 96
_PERSON_KEYS = ("id", "email", "userId", "firstName", "lastName", "name", "tags", "unsubscribed")
_OBJECT_KEYS = ("id", "externalId", "name")


def _cell(value: Any, limit: int = MAX_CELL) -> str:  # noqa: ANN401 - any JSON value
    if value is None or value == "" or value == []:
        text = "-"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, Decimal):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ", ".join(value)
    else:
        text = exact_json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fields(item: dict[str, Any], skip: Sequence[str]) -> str:
    return ", ".join(
        f"{k}={_cell(v, MAX_LAST_CELL)}" for k, v in item.items() if k not in skip and not k.startswith("_sdc_")
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """An aligned text table, at most MAX_ROWS rows (then a line saying how many more)."""
    last = len(headers) - 1
    cells = [
        [
            str(v)
            if isinstance(v, int) and not isinstance(v, bool)
            else _cell(v, MAX_LAST_CELL if i == last else MAX_CELL)
            for i, v in enumerate(row)
        ]
        for row in rows[:MAX_ROWS]
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [
        "  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "  " + "  ".join("-" * w for w in widths),
    ]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    if len(rows) > MAX_ROWS:
        lines.append(f"  … and {len(rows) - MAX_ROWS} more")
    return lines


def _who(person: dict[str, Any]) -> str:
    return str(person.get("email") or person.get("userId") or person["id"])


def _unsubscribed(person: dict[str, Any]) -> bool:
    return person.get("unsubscribed") in (True, "true")


def _labels(state: dict[str, Any]) -> dict[tuple[str, Any], str]:
    """(object name, Encharge id) -> how the summary names it: a person's email or userId, an object's externalId."""
    labels = {("person", p["id"]): _who(p) for p in state["people"]}
    for name, items in state["objects"].items():
        labels.update({(name, o["id"]): str(o.get("externalId") or f"#{o['id']}") for o in items})
    return labels


def _associations(state: dict[str, Any]) -> list[str]:
    links = state.get("associations", [])
    lines = [f"Associations ({len(links)})"]
    if links:
        labels = _labels(state)
        names = {d["id"]: d.get("name") for d in state.get("associationSchemas", [])}
        rows = [
            (
                f"{link['associationId']} {names.get(link['associationId']) or ''}".strip(),
                f"{link['fromObject']} {labels.get((link['fromObject'], link['fromId']), link['fromId'])}",
                f"{link['toObject']} {labels.get((link['toObject'], link['toId']), link['toId'])}",
            )
            for link in links
        ]
        lines += table(("association", "from", "to"), rows)
    return [*lines, ""]


def _name(person: dict[str, Any]) -> str | None:
    full = " ".join(p for p in (person.get("firstName"), person.get("lastName")) if isinstance(p, str) and p)
    return full or person.get("name")


def render(state: dict[str, Any]) -> str:
    """The summary of a sandbox state (as `Sandbox.state()` and GET /_sandbox/state give it)."""
    people, objects, events = state["people"], state["objects"], state["events"]
    tags = {tag for person in people for tag in person.get("tags", [])}
    requests = state["requests"]
    counts = ", ".join(f"{len(items)} {name}" for name, items in objects.items())
    archived = sum(1 for person in people if person.get("archived"))
    unsubscribed = [person for person in people if _unsubscribed(person)]
    deleted = state.get("deletedPeople", [])
    gone = ", ".join(
        f"{n} {what}"
        for n, what in ((archived, "archived"), (len(unsubscribed), "unsubscribed"), (len(deleted), "deleted"))
        if n
    )
    lines = [
        f"Encharge sandbox: {len(people)} people{f' ({gone})' if gone else ''}, {len(tags)} distinct tags, "
        f"objects: {counts or 'none'}, {len(events)} events, {requests['total']} API requests",
        "",
    ]

    lines.append(f"People ({len(people)})")
    if people:
        rows: list[tuple] = [
            (
                p.get("email"),
                p.get("userId"),
                _name(p),
                p.get("tags"),
                _fields(p, _PERSON_KEYS)
                + (" [archived]" if p.get("archived") else "")
                + (" [unsubscribed]" if _unsubscribed(p) else ""),
            )
            for p in people
        ]
        lines += table(("email", "userId", "name", "tags", "other fields"), rows)
    if unsubscribed:
        lines.append("  unsubscribed: " + _cell([_who(p) for p in unsubscribed], MAX_LAST_CELL))
    if deleted:
        lines.append(
            "  deleted for good: "
            + _cell([p.get("email") or p.get("userId") or p["id"] for p in deleted], MAX_LAST_CELL)
        )
    lines.append("")

    for name, items in objects.items():
        lines.append(f"Custom objects: {name} ({len(items)})")
        if items:
            rows = [(o.get("id"), o.get("externalId"), o.get("name"), _fields(o, _OBJECT_KEYS)) for o in items]
            lines += table(("id", "externalId", "name", "other fields"), rows)
        duplicates = state.get("duplicateObjects", {}).get(name)
        if duplicates:
            lines.append(
                "  externalIds held by several objects: "
                + _cell([f"{key} x{n}" for key, n in duplicates.items()], MAX_LAST_CELL)
            )
        lines.append("")

    lines += _associations(state)
    dropped = state.get("droppedFields", {})
    if dropped:
        lines += [
            "Fields dropped (the account does not have them): "
            + ", ".join(f"{owner}.{field} x{n}" for owner, fields in dropped.items() for field, n in fields.items()),
            "",
        ]

    lines.append(f"Events ({len(events)})")
    if events:
        rows = [
            (
                e.get("receivedAt"),
                e.get("name"),
                (e.get("user") or {}).get("email") or (e.get("user") or {}).get("userId"),
                _fields(e.get("properties") or {}, ()),
            )
            for e in events
        ]
        lines += table(("received", "name", "person", "properties"), rows)
    lines.append("")

    lines.append(f"Requests ({requests['total']})")
    if requests["counts"]:
        rows = [(c["endpoint"], c["status"], c["count"]) for c in requests["counts"]]
        lines += table(("endpoint", "status", "count"), rows)
    faults = {
        k: v
        for k, v in state.get("faults", {}).items()
        if v and not (k == "retry_after" and not state["faults"].get("rate_limit"))
    }
    if faults:
        lines += ["", "Faults: " + ", ".join(f"{k}={v}" for k, v in faults.items())]
    return "\n".join(lines) + "\n"
