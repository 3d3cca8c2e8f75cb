"""Keep-alive connections: urllib3's pools, the environment's proxies and CA bundle (read once per origin, the way
requests reads them), and redirects followed by our rules: never to plain http on another machine, and without
the Encharge token once a redirect leaves the origin it was meant for.

urllib3 directly, not a requests Session: a Session prepares, merges and checks every call in some 1,300 Python
function calls (about 1.2 ms of CPU per call on the 2-core machine), time the delivery threads take from the
reading thread through the interpreter lock.
"""

from __future__ import annotations

import base64
import os
import threading
import typing as t
import urllib.parse

import certifi
import requests.utils
import urllib3

from target_encharge.urls import TOKEN_HEADER, is_loopback, origin, url_path

MAX_REDIRECTS = 30  # as requests
_METHOD_TO_GET = {301: ("POST",), 302: None, 303: None}  # status -> methods made GET (None: all but HEAD)


class RefusedRedirectError(Exception):
    """A redirect to plain http on another machine: refused before connecting (the body is personal data)."""


class TooManyRedirectsError(Exception):
    """More than MAX_REDIRECTS redirects in a row."""


class Answer(t.NamedTuple):
    """An answer whose body is still to be read; whether it came after redirects, and with which headers its
    request went (the Encharge token may have been dropped on the way)."""

    response: urllib3.BaseHTTPResponse
    redirected: bool
    headers: t.Mapping[str, str]


class Transport:
    """Sends one HTTP request on a kept-alive connection and follows its redirects; thread-safe."""

    def __init__(self, pool_size: int, user_agent: str) -> None:
        self.pool_size = pool_size
        self.headers = urllib3.make_headers(keep_alive=True, accept_encoding=True, user_agent=user_agent)
        self._managers: dict[tuple[str | None, str], urllib3.PoolManager] = {}  # by (proxy, CA bundle)
        self._routes: dict[tuple[str, str, int | None], urllib3.PoolManager] = {}  # by origin
        self._lock = threading.Lock()

    def open(self, method: str, url: str, body: bytes | None, headers: t.Mapping[str, str], timeout: float) -> Answer:
        """Send a request; the answer of the last hop once redirects are followed (its body unread)."""
        sent = urllib3.HTTPHeaderDict(self.headers)
        sent.update(headers)  # case-insensitive: a header of the caller's replaces ours
        limits = urllib3.Timeout(connect=timeout, read=timeout)
        for hop in range(MAX_REDIRECTS + 1):
            response = self._manager(url).urlopen(
                method,
                url,
                body=body,
                headers=sent,
                timeout=limits,
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
            location = response.get_redirect_location()
            if not location:
                return Answer(response, hop > 0, sent)
            response.close()  # its body is not wanted (nor read: it could be anything)
            response.release_conn()
            target = urllib.parse.urljoin(url, location)
            _check_redirect(target)
            if _becomes_get(response.status, method):
                method, body = "GET", None
            sent = urllib3.HTTPHeaderDict(sent)  # a copy: the headers of each hop are kept as sent
            if response.status not in (307, 308):  # the body does not follow, nor what described it
                body = None
                for name in ("Content-Type", "Content-Length", "Transfer-Encoding"):
                    sent.discard(name)
            if origin(target) != origin(url):  # the token stays with the origin it was meant for
                sent.discard(TOKEN_HEADER)
            url = target
        msg = f"more than {MAX_REDIRECTS} redirects"
        raise TooManyRedirectsError(msg)

    def close(self) -> None:
        with self._lock:
            for manager in self._managers.values():
                manager.clear()

    def _manager(self, url: str) -> urllib3.PoolManager:
        """The pools for ``url``'s origin: through the proxy the environment names for it, if any."""
        at = origin(url)
        manager = self._routes.get(at)
        if manager is None:
            with self._lock:
                manager = self._routes.get(at) or self._route(url)
                self._routes[at] = manager
        return manager

    def _route(self, url: str) -> urllib3.PoolManager:
        # as requests reads them: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY less NO_PROXY, and the CA bundle
        proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
        if proxy is not None:
            proxy = requests.utils.prepend_scheme_if_needed(proxy, "http")
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
        key = (proxy, bundle)
        if key not in self._managers:
            tls: dict[str, t.Any] = {
                "cert_reqs": "CERT_REQUIRED",
                ("ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"): bundle,
            }
            if proxy is None:
                manager = urllib3.PoolManager(maxsize=self.pool_size, **tls)
            elif proxy.lower().startswith("socks"):
                from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as with requests

                manager = SOCKSProxyManager(proxy, maxsize=self.pool_size, **tls)
            else:
                manager = urllib3.ProxyManager(
                    proxy, proxy_headers=_proxy_headers(proxy), maxsize=self.pool_size, **tls
                )
            self._managers[key] = manager
        return self._managers[key]


def _check_redirect(target: str) -> None:
    scheme, host, port = origin(target)
    if scheme != "https" and not (scheme == "http" and is_loopback(host)):
        shown = f"{scheme}://{host}{f':{port}' if port else ''}{url_path(target)}"
        msg = f"refused a redirect to {shown}: only https, or plain http to this machine, is followed"
        raise RefusedRedirectError(msg)


def _becomes_get(status: int, method: str) -> bool:
    """A redirect that turns the request into a GET, as browsers and requests do (303, 302; 301 for POST)."""
    if status not in _METHOD_TO_GET or method == "GET":
        return False
    methods = _METHOD_TO_GET[status]
    return method != "HEAD" if methods is None else method in methods


def _proxy_headers(proxy: str) -> dict[str, str]:
    """A proxy URL's user and password, as the Proxy-Authorization header requests sends."""
    parts = urllib.parse.urlsplit(proxy)
    if not parts.username:
        return {}
    user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
    return {"Proxy-Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
