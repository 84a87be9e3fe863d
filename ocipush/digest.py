"""Content digests: ``sha256:…``."""

from __future__ import annotations

import hashlib
import re

import attrs

__all__ = ["Digest"]

# The OCI image spec's digest grammar, with the two registered algorithms checked strictly.
# Matched whole (fullmatch): ``$`` would also accept a trailing newline.
_DIGEST_RE = re.compile(r"(?P<alg>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)", re.ASCII)
_HEX_LEN = {"sha256": 64, "sha512": 128}
_SHOWN = 150  # characters of a rejected value quoted in a message: a header may be megabytes


def _shown(value: object) -> str:
    """``value`` quoted for a one-line message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}… ({len(text)} characters)"


@attrs.frozen(order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        m = _DIGEST_RE.fullmatch(text) if isinstance(text, str) else None
        if not m:
            raise ValueError(f"not a digest: {_shown(text)}")
        alg, hexpart = m["alg"], m["hex"]
        if alg not in _HEX_LEN:
            raise ValueError(f"unsupported digest algorithm {_shown(alg)} in {_shown(text)}")
        if len(hexpart) != _HEX_LEN[alg] or not re.fullmatch(r"[0-9a-f]+", hexpart, re.ASCII):
            raise ValueError(f"malformed {alg} digest: {_shown(text)}")
        return cls(alg, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    @property
    def short(self) -> str:
        """The form people read in progress lines: ``sha256:0123456789ab``."""
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
