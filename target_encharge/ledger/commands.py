"""``target-encharge-ledger``: look inside the sync ledger, forget part of it, replay a dead-letter file.

    target-encharge-ledger status [--config FILE]
    target-encharge-ledger forget [--config FILE] (--stream S | --destination D | --account A)...
    target-encharge-ledger forget [--config FILE] --stream S VALUE...     (one record)
    target-encharge-ledger runs [--config FILE] [--limit N] [--json]
    target-encharge-ledger explain [--config FILE] --stream S VALUE...
    target-encharge-ledger replay DEAD_LETTER_FILE

A record is named by its stream's key property values, in order (or, for a stream without key properties, by
its email, userId or externalId; a tag by its person and its tag).

The ledger is the one named by ``ledger_url`` in the target's config file (``--config``), else by the environment
variable TARGET_ENCHARGE_LEDGER_URL (how Meltano passes settings), else the default file in the working
directory. Errors are one line on stderr, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import typing as t
from decimal import Decimal
from pathlib import Path

import msgspec

from target_encharge import encoding
from target_encharge.config import ENV, ENV_PREFIX, load
from target_encharge.errors import EnchargeTargetError
from target_encharge.ledger import runs as history
from target_encharge.ledger.lease import HeldLease
from target_encharge.ledger.store import StreamStatus, SyncLedger
from target_encharge.templates import PERSON_IDS

PROG = "target-encharge-ledger"
ENVIRONMENT_URL = f"{ENV_PREFIX}LEDGER_URL"
REPLAY_SCHEMA = {"type": "object", "properties": {}, "additionalProperties": True}  # any record passes
_record_decoder = msgspec.json.Decoder(float_hook=Decimal)  # every digit of a number survives the replay


class CommandError(EnchargeTargetError):
    """A command cannot do what was asked (a bad argument, an unreadable file)."""


def ledger_url(config_path: str | None) -> str | None:
    """``ledger_url`` from the config file, else from the environment, else None (the default file); each read
    and checked by the target's own config loader."""
    from_file = load([config_path]).get("ledger_url") if config_path else None
    return str(from_file or load([ENV]).get("ledger_url") or "") or None


def _when(moment: t.Any) -> str:  # noqa: ANN401
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "-"


def format_leases(leases: t.Sequence[HeldLease]) -> list[str]:
    """The streams a run holds now (its lease), and who holds them."""
    if not leases:
        return []
    return ["", "Held by a run now (lease):"] + [
        f"  {lease.scope.account} / {lease.scope.destination} / {lease.scope.stream}: {lease.holder} "
        f"(expires in {max(lease.holder.expires_in, 0):.0f} s unless renewed)"
        for lease in leases
    ]


def format_status(location: str, rows: list[StreamStatus], leases: t.Sequence[HeldLease] = ()) -> str:
    """The status as a table a person reads, then the reasons of the failures waiting, then the leases held."""
    if not rows:
        return (
            "\n".join([f"Ledger {location}: empty (nothing delivered, no failures waiting).", *format_leases(leases)])
            + "\n"
        )
    header = ("account", "destination", "stream", "records", "last delivery", "failures waiting")
    table = [header] + [
        (
            row.scope.account,
            row.scope.destination,
            row.scope.stream,
            str(row.records),
            _when(row.last_delivery),
            str(row.failures_waiting),
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    numeric = {3, 5}
    lines = [
        "  ".join(
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    ]
    out = [f"Ledger {location}", "", *lines]
    failing = [row for row in rows if row.reasons]
    if failing:
        out += ["", "Failures waiting, by reason:"]
        for row in failing:
            for reason, count in row.reasons.items():
                out.append(f"  {row.scope.account} / {row.scope.destination} / {row.scope.stream}: {count} x {reason}")
    return "\n".join(out + format_leases(leases)) + "\n"


def _status(args: argparse.Namespace) -> None:
    with SyncLedger.open(ledger_url(args.config), read_only=True) as ledger:
        sys.stdout.write(format_status(ledger.location.shown, ledger.status(), ledger.leases()))


def _forget(args: argparse.Namespace) -> None:
    if args.values:
        _forget_record(args)
        return
    if not (args.account or args.destination or args.stream):
        raise CommandError("forget needs --stream, --destination or --account (any together narrow it)")
    with SyncLedger.open(ledger_url(args.config)) as ledger:
        removed = ledger.forget(account=args.account, destination=args.destination, stream=args.stream)
        chosen = ", ".join(
            f"{name} {value}"
            for name, value in (("account", args.account), ("destination", args.destination), ("stream", args.stream))
            if value
        )
        sys.stdout.write(f"Forgot {removed} entries ({chosen}) in ledger {ledger.location.shown}.\n")


# -- issue 25: the run history, one record explained or forgotten ----------------------------------------------


def _cell(value: t.Any) -> str:  # noqa: ANN401
    return "-" if value is None else str(value)


def _shown_moment(stamp: str | None) -> str:
    return stamp[:19].replace("T", " ") + " UTC" if stamp else "-"


def format_runs(location: str, rows: list[dict[str, t.Any]]) -> str:
    """The runs as a table a person reads, newest first."""
    if not rows:
        return f"Ledger {location}: no runs recorded yet.\n"
    header = ("run", "started", "ended", "status", "exit", "records", "calls", "failed", "reason")
    table = [header] + [
        (
            row["run_id"][:12],
            _shown_moment(row["started_at"]),
            _shown_moment(row["ended_at"]),
            row["status"],
            _cell(row["exit_code"]),
            f"{row['records_read']:,}",
            f"{row['calls']:,}",
            f"{row['failed']:,}",
            (row["reason"] or "")[:80],
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table]
    return "\n".join([f"Ledger {location}", "", *lines]) + "\n"


def _runs(args: argparse.Namespace) -> None:
    if args.limit < 1:
        raise CommandError("--limit must be 1 or more")
    with SyncLedger.open(ledger_url(args.config), read_only=True) as ledger:
        rows = history.newest_runs(ledger, args.limit)
        if args.json:
            sys.stdout.buffer.write(encoding.dumps(rows) + b"\n")
            sys.stdout.flush()
            return
        sys.stdout.write(format_runs(ledger.location.shown, rows))


def _loose(value: str) -> list[t.Any]:
    """A value from the command line as a record may have held it: the text, and the JSON it reads as (1, true)."""
    forms: list[t.Any] = [value]
    try:
        parsed = encoding.loads(value.encode())
    except ValueError:
        return forms
    if not isinstance(parsed, (dict, list, str)):
        forms.append(parsed)
    return forms


def identities(values: t.Sequence[str]) -> list[str]:
    """Every identity the ledger may know a record named by ``values`` by: its key properties' values (as text
    or as numbers), or an email (any case), userId, id or externalId; a tag by its person and its tag."""
    combos: list[list[t.Any]] = [[]]
    for value in values[:6]:
        combos = [[*combo, form] for combo in combos for form in _loose(value)]
    found = ["key:" + encoding.dumps(combo).decode() for combo in combos]
    head, *rest = values
    people = [f"{name}:{head.lower() if name == 'email' else head}" for name in PERSON_IDS]
    found += people + [f"externalId:{head}"]
    if rest:
        found += [f"{person} tag:{','.join(rest)}" for person in people]
    return found


def _known(ledger: SyncLedger, args: argparse.Namespace) -> list[history.Known]:
    known = [
        k
        for k in history.records(ledger, args.stream, identities(args.values))
        if (args.account is None or k.account == args.account)
        and (args.destination is None or k.destination == args.destination)
    ]
    if not known:
        raise CommandError(
            f"the ledger {ledger.location.shown} knows no record {' '.join(args.values)!r} of stream "
            f"'{args.stream}' (never delivered nor failed, or forgotten: removed by mirror, or by forget)"
        )
    return known


DELIVERY_SHOWN = ("fingerprint", "delivered_at", "encharge_id", "tags")  # the others are shown as they are
FAILURE_SHOWN = ("payload",)  # left out: the record itself, the user has it


def format_explained(ledger: SyncLedger, known: list[history.Known]) -> str:
    out: list[str] = []
    for k in known:
        out += [f"Stream '{k.stream}', account {k.account}, destination {k.destination}", f"  identity: {k.identity}"]
        if k.delivery is None:
            out.append("  delivered: never (Encharge never answered 2xx for it)")
        else:
            delivery = k.delivery
            at = history.stamp_of(delivery.get("delivered_at"))
            run = history.run_at(ledger, at, k.stream) if at else None
            by = (
                f"by run {run['run_id']} ({run['status']}, started {_shown_moment(run['started_at'])})"
                if run
                else ("by a run the history does not hold")
            )
            out.append(f"  last delivered: {_shown_moment(at)} {by}")
            if delivery.get("encharge_id"):
                out.append(f"  in Encharge as: {delivery['encharge_id']}")
            if delivery.get("fingerprint") == "":
                out.append("  found in Encharge (create mode), not written by this target")
            else:
                out.append(
                    f"  unchanged since {_shown_moment(at)}: a record with the same content is not sent again "
                    f"(fingerprint {str(delivery.get('fingerprint'))[:16]})"
                )
            if delivery.get("tags"):
                out.append(f"  tags this target added: {delivery['tags']}")
            others = {c: v for c, v in delivery.items() if c not in DELIVERY_SHOWN and v is not None}
            for column, value in others.items():  # removal state, as mirror keeps it
                out.append(f"  {column.replace('_', ' ')}: {value}")
        if k.failure is None:
            out.append("  failures waiting: none")
        else:
            failure = k.failure
            sent_again = (
                "sent again when its stream next comes"
                if failure.get("retryable")
                else ("waits for the source to change it")
            )
            out.append(
                f"  failure waiting ({sent_again}): {failure.get('reason')}; {failure.get('attempts')} attempt(s), "
                f"first {_shown_moment(history.stamp_of(failure.get('first_failed_at')))}, last "
                f"{_shown_moment(history.stamp_of(failure.get('last_failed_at')))}"
            )
        out.append("")
    return "\n".join(out)


def _explain(args: argparse.Namespace) -> None:
    with SyncLedger.open(ledger_url(args.config), read_only=True) as ledger:
        sys.stdout.write(format_explained(ledger, _known(ledger, args)))


def _forget_record(args: argparse.Namespace) -> None:
    if not args.stream:
        raise CommandError("forget VALUE... needs --stream (the stream the record came in)")
    from target_encharge.ledger.store import Scope

    with SyncLedger.open(ledger_url(args.config)) as ledger:
        known = _known(ledger, args)
        for k in known:
            scope = Scope(k.account, k.destination, k.stream)
            ledger.remove(scope, [k.identity])
        sys.stdout.write(
            f"Forgot {len(known)} entr{'y' if len(known) == 1 else 'ies'} of {' '.join(args.values)!r} "
            f"(stream {args.stream}) in ledger {ledger.location.shown}: the next run sends it.\n"
        )


def dead_letters(path: str) -> list[dict[str, t.Any]]:
    """The lines of a dead-letter JSONL file, each with at least ``stream`` and ``record``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read the dead-letter file {path}: {type(exc).__name__}") from None
    letters = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            letter = _record_decoder.decode(line)
        except msgspec.DecodeError:
            raise CommandError(f"{path} line {number}: not JSON") from None
        if (
            not isinstance(letter, dict)
            or not isinstance(letter.get("stream"), str)
            or not isinstance(letter.get("record"), dict)
        ):
            raise CommandError(f'{path} line {number}: not a dead letter (needs a "stream" and a "record" object)')
        letters.append(letter)
    return letters


def replay_messages(letters: t.Iterable[dict[str, t.Any]]) -> t.Iterator[dict[str, t.Any]]:
    """Singer messages for dead letters: a permissive SCHEMA before each stream's first RECORD."""
    seen: set[str] = set()
    for letter in letters:
        stream = letter["stream"]
        if stream not in seen:
            seen.add(stream)
            yield {"type": "SCHEMA", "stream": stream, "schema": REPLAY_SCHEMA, "key_properties": []}
        yield {"type": "RECORD", "stream": stream, "record": letter["record"]}


def _replay(args: argparse.Namespace) -> None:
    letters = dead_letters(args.dead_letter_file)  # all read first: a bad line prints nothing
    sys.stdout.buffer.write(encoding.dumps_lines(replay_messages(letters)))
    sys.stdout.flush()


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit status 1, like every other error of the command."""

    def error(self, message: str) -> t.NoReturn:
        self.exit(1, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Look inside target-encharge's sync ledger.")
    config = _Parser(add_help=False)
    config.add_argument(
        "--config",
        metavar="FILE",
        help=f"the target's config JSON (its ledger_url); "
        f"else ${ENVIRONMENT_URL}, else the default file in the working directory",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{status,runs,explain,forget,replay}")
    status = verbs.add_parser(
        "status", parents=[config], help="per account, destination and stream: records, last delivery, failures waiting"
    )
    status.set_defaults(run=_status)
    forget = verbs.add_parser(
        "forget", parents=[config], help="remove what the ledger knows for a stream, destination or account"
    )
    forget.add_argument("--stream")
    forget.add_argument("--destination", help="template name, custom object name or manual URL")
    forget.add_argument("--account", help="the Encharge account id")
    forget.add_argument(
        "values", nargs="*", metavar="VALUE", help="with --stream: one record (its key property values, or email)"
    )
    forget.set_defaults(run=_forget)
    runs = verbs.add_parser("runs", parents=[config], help="the last runs, newest first: how each ended, its counts")
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="how many (default 20)")
    runs.add_argument("--json", action="store_true", help="a JSON array of the runs' history rows")
    runs.set_defaults(run=_runs)
    explain = verbs.add_parser(
        "explain", parents=[config], help="one record: when it was delivered and by which run, failures waiting"
    )
    explain.add_argument("--stream", required=True)
    explain.add_argument("--destination", help="template name, custom object name or manual URL")
    explain.add_argument("--account", help="the Encharge account id")
    explain.add_argument(
        "values", nargs="+", metavar="VALUE", help="its key property values, or email/userId/externalId"
    )
    explain.set_defaults(run=_explain)
    replay = verbs.add_parser(
        "replay", parents=[config], help="print a dead-letter file as Singer messages, to pipe back into the target"
    )
    replay.add_argument("dead_letter_file", metavar="DEAD_LETTER_FILE")
    replay.set_defaults(run=_replay)
    return parser


def main(argv: t.Sequence[str] | None = None) -> int:
    """Run one verb; 0 on success, 1 with one line on stderr when it fails."""
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except EnchargeTargetError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    except BrokenPipeError:  # `replay ... | head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
