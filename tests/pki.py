"""Test certificates made with the ``openssl`` CLI: a CA, the leaf certificates it signs,
and a self-signed key for signing tokens.  Nothing here is ever trusted outside a test."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.services import find_tool

# No config file: the system openssl.cnf could add extensions we do not want.
_CONFIG = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n"


@dataclass(frozen=True)
class KeyPair:
    cert: Path  # PEM
    key: Path  # PEM, unencrypted


def openssl(*args: str | Path, input: bytes | None = None) -> bytes:
    result = subprocess.run([find_tool("openssl"), *map(str, args)], input=input, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def _req(directory: Path, name: str, key_args: list[str], extensions: list[str], signer: KeyPair | None) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{name}.cnf"
    config.write_text(_CONFIG)
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    ca = ["-CA", signer.cert, "-CAkey", signer.key] if signer else []
    addext = [arg for ext in extensions for arg in ("-addext", ext)]
    openssl("req", "-x509", "-config", config, "-nodes", *key_args, "-keyout", pair.key, "-out", pair.cert,
            "-days", "2", "-subj", f"/CN={name}", *ca, *addext)
    return pair


def make_ca(directory: Path, name: str = "ocipush-test-ca") -> KeyPair:
    return _req(directory, name, ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
                ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"], None)


def make_leaf(directory: Path, ca: KeyPair, name: str, *, client: bool = False) -> KeyPair:
    """A server certificate for 127.0.0.1 and localhost, or a client certificate."""
    usage = ["extendedKeyUsage=clientAuth"] if client else [
        "extendedKeyUsage=serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    return _req(directory, name, ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
                ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", *usage], ca)


def make_signing_key(directory: Path, name: str = "token-signer") -> KeyPair:
    """A self-signed RSA key and certificate: RS256 signatures come straight from ``openssl dgst``."""
    return _req(directory, name, ["-newkey", "rsa:2048"], ["keyUsage=critical,digitalSignature"], None)


def der(cert: Path) -> bytes:
    return openssl("x509", "-in", cert, "-outform", "DER")
