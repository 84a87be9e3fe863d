"""Content digests: ``sha256:…``."""

from __future__ import annotations

import hashlib
import re
import attrs


__all__ = ["Digest"]

# The OCI image spec's digest grammar, with the two registered algorithms checked strictly.
_DIGEST_RE = re.compile(r"^(?P<alg>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)$")
_HEX_LEN = {"sha256": 64, "sha512": 128}


@attrs.frozen(order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        m = _DIGEST_RE.match(text)
        if not m:
            raise ValueError(f"not a digest: {text!r}")
        alg, hexpart = m["alg"], m["hex"]
        if alg not in _HEX_LEN:
            raise ValueError(f"unsupported digest algorithm {alg!r} in {text!r}")
        if len(hexpart) != _HEX_LEN[alg] or not re.fullmatch(r"[0-9a-f]+", hexpart):
            raise ValueError(f"malformed {alg} digest: {text!r}")
        return cls(alg, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self):
        return hashlib.new(self.algorithm)

    @property
    def short(self) -> str:
        """The form people read in progress lines: ``sha256:0123456789ab``."""
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
