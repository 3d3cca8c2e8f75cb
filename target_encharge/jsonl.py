"""The JSONL writer every output line goes through: :class:`Lines` appends to a file, or writes to stdout or
stderr, and masks every value before it is serialised."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
import threading
import typing as t

from target_encharge import encoding
from target_encharge.errors import OutputError

if t.TYPE_CHECKING:
    from target_encharge.redaction import Redactor

_NON_ASCII = re.compile(r"[^\x00-\x7f]")
STANDARD_STREAMS = ("stdout", "stderr")


def ascii_json(text: str) -> str:
    """JSON text with every non-ASCII character written as a JSON escape: the same value, for a stdout whose
    encoding cannot carry UTF-8 (``PYTHONIOENCODING=ascii``). Outside strings JSON has no such characters."""
    return _NON_ASCII.sub(lambda m: json.dumps(m.group())[1:-1], text)


class Lines:
    """A JSONL destination shared by threads: a file (appended to), or ``stdout``/``stderr``; every value is
    masked before it is serialised. ``setting`` names the setting the path came from, for errors; ``lazy``
    files are created when a first line is written (the default dead-letter file)."""

    def __init__(self, path: str, redact: Redactor, setting: str = "", *, lazy: bool = False) -> None:
        self.path, self.redact, self.setting = path, redact, setting
        self.written = 0
        self._lock = threading.Lock()
        self._file: t.BinaryIO | None = None
        if path not in STANDARD_STREAMS and not lazy:
            self._open()

    @property
    def shown_path(self) -> str:
        return self.path if self.path in STANDARD_STREAMS else os.path.abspath(self.path)

    def _open(self) -> t.BinaryIO:
        if self._file is None:
            try:
                self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
                if self._file.seek(0, os.SEEK_END) and _ends_mid_line(self.path):
                    self._file.write(b"\n")  # an earlier run stopped mid-line: start on a clean one
            except OSError as exc:
                msg = f"{self.setting}: cannot write to {self.shown_path!r} ({exc.strerror})"
                raise OutputError(msg) from None
        return self._file

    def write(self, obj: t.Any) -> None:  # noqa: ANN401
        text = encoding.dumps(obj).decode()
        if self.redact.finds(text):  # masked in the values, then serialised again: the line stays valid JSON
            text = self.redact(encoding.dumps(self.redact.value(obj)).decode())
        line = text + "\n"
        with self._lock:
            if self.path == "stdout":
                _write_stdout(line)
            elif self.path == "stderr":
                sys.stderr.write(line)
                sys.stderr.flush()
            else:
                self._append(line.encode())
            self.written += 1

    def _append(self, data: bytes) -> None:
        """One whole line or nothing: a write cut short (a full disk) is taken back."""
        file = self._open()
        start = file.seek(0, os.SEEK_END)
        try:
            if file.write(data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            with contextlib.suppress(OSError):
                file.truncate(start)
            msg = (
                f"{self.setting}: cannot write to {self.shown_path!r} ({exc.strerror}); the record is not "
                "settled, so its STATE was not written"
            )
            raise OutputError(msg) from None

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()


def _ends_mid_line(path: str) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) != b"\n"


def _write_stdout(line: str) -> None:
    """A line on stdout (looked up at each write: whoever captures stdout gets it); escaped to ASCII when its
    encoding cannot carry the text; a reader that closed stdout is a reason to stop, told in one line."""
    out = sys.stdout
    try:
        try:
            out.write(line)
        except UnicodeEncodeError:  # nothing was written: the text is encoded whole first
            out.write(ascii_json(line))
        out.flush()
    except (BrokenPipeError, ValueError, OSError) as exc:
        if isinstance(exc, ValueError) and not out.closed:
            raise
        with contextlib.suppress(OSError, ValueError):  # Python's flush at exit must not complain again
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        msg = (
            "stdout was closed by the reader (a `| head`, or the next step of the pipeline stopped); STATE "
            "written so far is safe, the rest of the input was not handled"
        )
        raise OutputError(msg) from None
