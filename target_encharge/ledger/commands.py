"""``target-encharge-ledger``: look inside the sync ledger, forget part of it, replay a dead-letter file.

    target-encharge-ledger status [--config FILE]
    target-encharge-ledger forget [--config FILE] (--stream S | --destination D | --account A)...
    target-encharge-ledger replay DEAD_LETTER_FILE

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
from target_encharge.ledger.lease import HeldLease
from target_encharge.ledger.store import StreamStatus, SyncLedger

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
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{status,forget,replay}")
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
    forget.set_defaults(run=_forget)
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
