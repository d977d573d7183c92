"""Self-signed certificates for TLS tests, made with the openssl command (installed by CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def self_signed(directory: Path, common_name: str, alt_name: str) -> tuple[Path, Path]:
    """A P-256 certificate for ``common_name`` with the subjectAltName ``alt_name`` (such as
    ``DNS:localhost`` or ``IP:127.0.0.1``), valid two days: answers (certificate, key) files.
    Skips the test where openssl is missing, and fails it under CI, which must run it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI"):  # CI must run the TLS tests, never skip them silently
            pytest.fail("the openssl command is not installed", pytrace=False)
        pytest.skip("the openssl command is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={common_name}", "-addext",
                    f"subjectAltName={alt_name}"], check=True, capture_output=True)
    return cert, key
