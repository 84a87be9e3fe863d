"""The HTTP side of one registry: scheme and TLS choice, authentication, error messages.

TLS settings come from ``tls.registry_tls`` (cert dirs, registries.conf), credentials
from the user or ``credentials.AuthFiles``; ``auth.RegistryAuth`` answers challenges.

Every request goes through ``RegistryClient.request``, which turns transport failures and
unexpected statuses into one-line ``RegistryError``s naming the method, URL and reason.
URLs in messages lose their query: upload locations and redirects may carry signatures.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx

from .. import __version__
from ..errors import AuthenticationError, RegistryError
from .auth import Credentials, RegistryAuth
from .credentials import AuthFiles
from .retry import TRANSIENT_STATUSES, RetryPolicy, is_transient
from .tls import registry_tls

__all__ = ["ClientOptions", "RegistryClient", "describe_error", "redact"]

USER_AGENT = f"ocipush/{__version__}"
_optional_path = attrs.converters.optional(Path)


@attrs.frozen
class ClientOptions:
    tls_verify: bool | None = None  # None: verify, unless registries.conf marks the registry insecure
    credentials: Credentials | None = None  # the user's own; None: looked up in the auth files
    authfile: Path | None = attrs.field(default=None, converter=_optional_path)  # the only auth file, when given
    cert_dir: Path | None = attrs.field(default=None, converter=_optional_path)  # instead of certs.d/HOST
    timeout: float = 120.0  # per read/write: chunks of 100 MB on slow links need minutes


class RegistryClient:
    """Talks to one registry host. Thread-safe: uploads share it."""

    def __init__(
        self,
        host: str,
        options: ClientOptions = ClientOptions(),
        *,
        loopback: bool = False,
        retry: RetryPolicy = RetryPolicy(),
    ):
        self.host = host
        self.options = options
        self.loopback = loopback
        self.retry = retry
        self.on_retry: Callable[[RegistryError], None] = lambda error: None
        self.base_url = ""
        self.tls = registry_tls(host, verify=options.tls_verify, cert_dir=options.cert_dir)
        # Plain HTTP only to this machine, or to a registry the user made insecure.
        self._schemes = ("https", "http") if loopback or self.tls.insecure else ("https",)
        self.auth = RegistryAuth(host, self._credentials_lookup(), insecure=self.tls.insecure)
        timeout = httpx.Timeout(options.timeout, connect=30.0)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        headers = {"User-Agent": USER_AGENT}
        self._http = httpx.Client(
            verify=self.tls.context, timeout=timeout, limits=limits, headers=headers, auth=self.auth
        )

    def _credentials_lookup(self) -> Callable[[str], Credentials | None]:
        """repository → credentials: the user's own for every repository, else the auth files'."""
        given = self.options.credentials
        if given is not None:
            return lambda repository: given
        return functools.partial(AuthFiles.discover(self.options.authfile).find, self.host)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- connection -----------------------------------------------------------------

    def connect(self) -> None:
        """Find the URL that serves ``/v2/``: HTTPS, then plain HTTP where allowed."""
        failures = []
        for scheme in self._schemes:
            url = f"{scheme}://{self.host}/v2/"
            try:
                response = self._http.get(url)
            except httpx.HTTPError as e:
                failures.append(f"{url}: {_reason(e)}{self._tls_hint(e)}")
                continue
            for attempt in range(1, self.retry.attempts + 1):
                if response.status_code not in TRANSIENT_STATUSES:
                    break
                # Busy (503, 429…), not absent: ask again, as for any other request.
                error = RegistryError(
                    f"GET {url}: {describe_error(response)}",
                    status=response.status_code,
                    headers={k.lower(): v for k, v in response.headers.items()},
                )
                self.on_retry(error)
                self.retry.sleep(attempt, error)
                try:
                    response = self._http.get(url)
                except httpx.HTTPError:
                    break
            if response.status_code in (200, 401):
                self.base_url = f"{scheme}://{self.host}"
                self.auth.bind(self.base_url)  # credentials go to this origin only
                return
            failures.append(f"{url}: {describe_error(response)}")
        raise RegistryError(f"cannot reach registry {self.host}: " + "; ".join(failures))

    def _tls_hint(self, error: httpx.HTTPError) -> str:
        if "CERTIFICATE_VERIFY_FAILED" not in str(error):
            return ""
        return (f" (give its CA with --cert-dir DIR or in ~/.config/containers/certs.d/{self.host}/ca.crt, "
                "or use --tls-verify=false)")

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    # -- requests -------------------------------------------------------------------

    def request(self, method: str, url: str, *, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        """Send one request; a status outside ``expect`` raises RegistryError."""
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            raise RegistryError(f"{method} {redact(url)}: {_reason(e)}") from None
        if response.status_code in expect:
            return response
        codes = _error_codes(response)
        message = f"{method} {redact(url)}: {describe_error(response)}"
        if response.status_code == 401:
            raise AuthenticationError(
                f"{self.host}: authentication failed ({message})"
                + ("" if self.options.credentials else "; give credentials with --creds")
            )
        headers = {k.lower(): v for k, v in response.headers.items()}
        raise RegistryError(message, status=response.status_code, codes=codes, headers=headers)

    def idempotent(self, method: str, url: str, *, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        """``request`` for requests that may simply be sent again: retried when transient."""
        attempt = 0
        while True:
            try:
                return self.request(method, url, expect=expect, **kwargs)
            except RegistryError as e:
                attempt += 1
                if not is_transient(e) or attempt > self.retry.attempts:
                    raise
                self.on_retry(e)
                self.retry.sleep(attempt, e)


def redact(url: str | httpx.URL) -> str:
    u = httpx.URL(str(url))
    return str(u.copy_with(query=None, fragment=None)) + ("?…" if u.query else "")


def _reason(e: httpx.HTTPError) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0]


def _error_codes(response: httpx.Response) -> tuple[str, ...]:
    try:
        errors = json.loads(response.content).get("errors") or []
        return tuple(str(e.get("code")) for e in errors if isinstance(e, dict))
    except Exception:
        return ()


def describe_error(response: httpx.Response) -> str:
    """``413 Request Entity Too Large: <detail>`` from an OCI error body, an HTML page or text."""
    head = f"{response.status_code} {response.reason_phrase}".strip()
    body = response.content[:8192].decode("utf-8", "replace")
    detail = ""
    try:
        errors = json.loads(body).get("errors") or []
        detail = "; ".join(
            f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ") for e in errors if isinstance(e, dict)
        )
    except Exception:
        title = re.search(r"<title>(.*?)</title>", body, re.I | re.S)
        text = title[1] if title else re.sub(r"<[^>]+>", " ", body)
        detail = " ".join(text.split())[:160]
    # Whatever a server sends is untrusted: no control characters reach the terminal.
    detail = " ".join("".join(c if c.isprintable() else " " for c in detail).split())[:300]
    head = "".join(c for c in head if c.isprintable())
    if detail and detail.lower() != head.lower() and detail.lower() not in head.lower():
        return f"{head}: {detail}"
    return head
