"""Singer BATCH messages: the records of the files a manifest names, read one at a time.

An SDK tap with ``batch_config`` writes its records to files (JSONL, often gzip; or Parquet) and sends a BATCH
message naming them. The target hands each record on exactly as if it had come in a RECORD message. A file that
cannot be read is a reason to stop, naming the file, before the STATE after the BATCH goes out.
"""

from __future__ import annotations

import decimal
import importlib.util
import typing as t

import fsspec
import msgspec

from target_encharge.errors import InputError

_decoder = msgspec.json.Decoder(float_hook=decimal.Decimal)
FORMATS = ("jsonl", "parquet")


def records_of_batch(message: dict, line: int) -> t.Iterator[dict]:
    """The records of a BATCH message's manifest, file after file, in order. ``line`` is the message's input
    line, named in a reason to stop."""
    encoding = message.get("encoding")
    manifest = message.get("manifest")
    if not isinstance(encoding, dict) or not isinstance(manifest, list) or not isinstance(message.get("stream"), str):
        msg = f"input line {line}: a BATCH message needs 'stream', an 'encoding' object and a 'manifest' list"
        raise InputError(msg)
    fmt, compression = encoding.get("format"), encoding.get("compression") or "none"
    if fmt not in FORMATS:
        msg = f"input line {line}: BATCH format {fmt!r} is not supported (only {', '.join(FORMATS)})"
        raise InputError(msg)
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        msg = (
            f"input line {line}: BATCH files in parquet format need pyarrow (pip install pyarrow), "
            "or set the tap's batch_config to jsonl"
        )
        raise InputError(msg)
    if compression not in ("none", "gzip"):
        msg = f"input line {line}: BATCH compression {compression!r} is not supported (none or gzip)"
        raise InputError(msg)
    for url in manifest:
        yield from _file_records(str(url), fmt, compression, line)


def _file_records(url: str, fmt: str, compression: str, line: int) -> t.Iterator[dict]:
    try:
        with fsspec.open(url, mode="rb", compression="gzip" if compression == "gzip" else None) as file:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                yield from pq.read_table(file).to_pylist()
                return
            for number, raw in enumerate(file, 1):
                if not raw.strip():
                    continue
                try:
                    row = _decoder.decode(raw)
                except msgspec.DecodeError as exc:
                    msg = f"input line {line}: BATCH file {url} line {number} is not valid JSON ({exc})"
                    raise InputError(msg) from None
                if not isinstance(row, dict):
                    msg = f"input line {line}: BATCH file {url} line {number} is not a record object"
                    raise InputError(msg)
                yield row
    except InputError:
        raise
    except (OSError, ValueError, EOFError, ImportError) as exc:  # missing, unreadable, bad gzip, no fs driver
        msg = (
            f"input line {line}: BATCH file {url} cannot be read ({type(exc).__name__}: {exc}); "
            "nothing after it was read"
        )
        raise InputError(msg) from None
