"""Redaction: the keys masked wherever text may carry them (every output, every log line, the reason to stop)."""

from __future__ import annotations

import logging
import typing as t

from typing_extensions import override

MASK = "***"
MIN_SECRET_CHARS = 4  # shorter values would mask ordinary text


class Redactor:
    """Masks the keys in text: one place for all outputs."""

    def __init__(self, secrets: t.Iterable[str | None]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class RedactingFilter(logging.Filter):
    """A log filter that masks the keys in every message, whoever logs it."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install(redact: Redactor, *loggers: logging.Logger) -> t.Callable[[], None]:
    """Mask the keys on every handler of ``loggers`` (and the root logger); returns what takes the filter off
    again, so that runs in one process do not pile filters up."""
    redacting = RedactingFilter(redact)
    handlers = {h for log in (logging.getLogger(), *loggers) for h in log.handlers}
    for handler in handlers:
        handler.addFilter(redacting)

    def uninstall() -> None:
        for handler in handlers:
            handler.removeFilter(redacting)

    return uninstall
