"""Redaction: the keys masked wherever text may carry them (every output, every log line, every traceback, the
reason to stop), in every encoding a key can take on its way there."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
import typing as t
import urllib.parse

from typing_extensions import override

MASK = "***"
MIN_SECRET_CHARS = 4  # never masked: shorter text is ordinary text (settings refuse keys under 8 characters)


def encodings(secret: str) -> set[str]:
    """Every form a key takes in our outputs: as is, JSON-escaped (ASCII or not), percent-encoded (with and
    without '/' kept, '+' for spaces, and urllib3's lower-case re-quoting)."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        urllib.parse.quote(secret),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        urllib.parse.quote_plus(secret, safe="/"),
    }
    forms |= {urllib.parse.quote(form, safe="") for form in set(forms)}  # a key quoted twice (a URL in a URL)
    return {form for form in forms if form}


# A URL's user information (``scheme://user:password@``), masked as a whole wherever a password may be in it.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][\w+.-]*://)[^\s/?#@]*@")
# A word secret (a password) stands as a token: not inside a longer word, a name or a package extra
# (``target-encharge[postgres]`` keeps its text when the password is ``postgres``).
_INSIDE = r"\w\[\]\-+%.~"


def mask_userinfo(text: str) -> str:
    """``text`` with the user information of every URL in it shown as ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)


def word_pattern(words: t.Iterable[str]) -> re.Pattern[str] | None:
    """A pattern finding ``words`` (in every form :func:`encodings` gives them) where each stands as a token."""
    forms = sorted({form for word in words for form in encodings(word)}, key=len, reverse=True)
    if not forms:
        return None
    alternatives = "|".join(re.escape(form) for form in forms)
    return re.compile(rf"(?<![{_INSIDE}])(?:{alternatives})(?![{_INSIDE[:-2]}])")  # (a '.' or '~' may follow)


class Redactor:
    """Masks the keys in text and in values: one place for all outputs.

    ``secrets`` (the keys) are masked wherever they occur; ``words`` (the ledger's password, which may be a common
    word) where they stand as a token, and with the user information of any URL. A word also among ``secrets`` is
    taken as a word."""

    def __init__(self, secrets: t.Iterable[str | None], *, words: t.Iterable[str | None] = ()) -> None:
        tokens = {w for w in words if w and len(w) >= MIN_SECRET_CHARS}
        keys = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS} - tokens
        self.secrets = sorted({form for key in keys for form in encodings(key)}, key=len, reverse=True)
        self._words = word_pattern(tokens)

    def finds(self, text: str) -> bool:
        """Whether ``text`` holds a key in any of its forms."""
        return any(secret in text for secret in self.secrets) or (
            self._words is not None and (self._words.search(text) is not None or mask_userinfo(text) != text)
        )

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if self._words is not None:
            text = self._words.sub(MASK, mask_userinfo(text))
        return text

    def value(self, obj: t.Any) -> t.Any:  # noqa: ANN401
        """``obj`` with the keys masked in every string it holds (keys of objects too), before it is serialised:
        masking JSON text afterwards could cut an escape in two and leave invalid JSON."""
        if not self.secrets and self._words is None:
            return obj
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {self.value(k): self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj


class RedactingFilter(logging.Filter):
    """A log filter that masks the keys in every message and traceback, whoever logs it."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info or record.exc_text or record.stack_info:  # a traceback is text too: masked with the rest
            extra = record.exc_text or (
                "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
            )
            message = "\n".join(part.rstrip("\n") for part in (message, extra, record.stack_info or "") if part)
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        clean = self.redact(message)
        if clean != record.msg or record.args:
            record.msg, record.args = clean, None
        return True


def install(redact: Redactor, *loggers: logging.Logger) -> t.Callable[[], None]:
    """Mask the keys on every handler of ``loggers`` (and the root logger), and in tracebacks nobody catches;
    returns what takes it all off again, so that runs in one process do not pile filters up."""
    redacting = RedactingFilter(redact)
    handlers = {h for log in (logging.getLogger(), *loggers) for h in log.handlers}
    for handler in handlers:
        handler.addFilter(redacting)
    previous_hook, previous_thread_hook = sys.excepthook, threading.excepthook

    def masked_hook(kind: type[BaseException], exc: BaseException, tb: t.Any) -> None:  # noqa: ANN401
        sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))

    def masked_thread_hook(args: threading.ExceptHookArgs) -> None:
        masked_hook(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)

    sys.excepthook, threading.excepthook = masked_hook, masked_thread_hook

    def uninstall() -> None:
        for handler in handlers:
            handler.removeFilter(redacting)
        sys.excepthook, threading.excepthook = previous_hook, previous_thread_hook

    return uninstall
