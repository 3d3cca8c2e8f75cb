"""URL and credential rules, as pure functions and values: which URLs are allowed, where a URL really connects,
and which Encharge key (if any) a URL is given."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import urllib.parse

import urllib3

from target_encharge.errors import ConfigError

TOKEN_HEADER = "X-Encharge-Token"  # noqa: S105 - the header either key travels in, not a key
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine (plain http is allowed there only)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)  # every call asks it several times of the same few URLs
def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) that the HTTP client will really connect to.

    Parsed with urllib3's parser, the one requests connects with: ``urllib.parse`` reads some URLs otherwise
    (``http://other:1\\@api.host/``: a backslash ends urllib3's host, not urllib.parse's), and a key must
    follow the connection, not a reading of it."""
    try:
        parts = urllib3.util.parse_url(url)
    except urllib3.exceptions.LocationParseError:
        return "", "", None
    scheme = (parts.scheme or "").lower()
    return scheme, (parts.host or "").lower().strip("[]"), parts.port or DEFAULT_PORTS.get(scheme)


def require_safe_url(url: str, setting: str) -> None:
    """https, or plain http to this machine only; else a ConfigError naming ``setting``."""
    scheme, host, _ = origin(url)
    if scheme == "https" and host:
        return
    if scheme == "http" and is_loopback(host):
        return
    msg = f"{setting}: {url!r} must be an https URL (plain http is only allowed to loopback)"
    raise ConfigError(msg)


def join_url(base: str, url: str) -> str:
    """An absolute URL as is; a path relative to ``base``."""
    if urllib.parse.urlsplit(url).scheme:
        return url
    return base.rstrip("/") + "/" + url.lstrip("/")


def url_path(url: str) -> str:
    """The path of a URL, for messages (never its query, which may carry identifiers)."""
    return urllib.parse.urlsplit(url).path or "/"


@dataclasses.dataclass(frozen=True)
class Credential:
    """The key a URL is given: the setting it comes from and its value (None when that setting is unset)."""

    setting: str  # "api_key" or "write_key"
    key: str | None

    @property
    def description(self) -> str:
        return "the Encharge Ingest write key" if self.setting == "write_key" else "the Encharge REST API key"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Which key a URL gets: the API key for the REST host, the write key for Ingest, none elsewhere."""

    api_url: str
    ingest_url: str
    api_key: str | None = None
    write_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))
        object.__setattr__(self, "ingest_url", self.ingest_url.rstrip("/"))

    def for_url(self, url: str) -> Credential | None:
        """The credential for a URL on Encharge's configured hosts, else None."""
        at = origin(url)
        ingest = origin(self.ingest_url)
        if at == ingest and (url.rstrip("/") == self.ingest_url or url.startswith(self.ingest_url + "/")):
            return Credential("write_key", self.write_key)
        if at == origin(self.api_url):
            return Credential("api_key", self.api_key)
        if at == ingest:
            return Credential("write_key", self.write_key)
        return None

    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.write_key) if s]
