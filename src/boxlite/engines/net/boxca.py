"""A box's own certificate authority, for the secret proxy's TLS interception (:mod:`.secretproxy`).

Each box start with secrets makes a fresh CA (ECDSA P-256, valid 30 days, path length 0, name
constrained to the secrets' hosts) whose certificate is added to the box's trust store. Its key
signs one leaf and is then dropped: it is never written anywhere, so nobody (the box least of
all) can mint more certificates the box trusts. The leaf's key stays in the box dir on the host
(0600), read only by the box's secret proxy. The leaf certificate, signed by it, names exactly
the hosts the secrets list (``*.d`` entries become a wildcard SAN: one label below d), so the
box trusts the proxy for those names only; for any other name the box's TLS is not intercepted.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from ...errors import ConfigError

CA_CERT, LEAF_CERT, LEAF_KEY = "secrets-ca.pem", "secrets-leaf.pem", "secrets-leaf.key"
VALID_DAYS = 30


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def make(box_dir: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """Create the CA and the leaf for ``hosts`` in ``box_dir``: (CA certificate, leaf cert, leaf key)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError("secrets need the 'cryptography' package on the host") from None
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"BoxLite box CA {box_dir.name}")])
    sans: list[x509.GeneralName] = []
    permitted: list[x509.GeneralName] = []
    for h in hosts:
        try:
            ip = ipaddress.ip_address(h)
        except ValueError:
            sans.append(x509.DNSName(h))
            permitted.append(x509.DNSName(h[2:] if h.startswith("*.") else h))
        else:
            sans.append(x509.IPAddress(ip))
            permitted.append(x509.IPAddress(ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")))
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    raw = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    _write(box_dir / CA_CERT, ca.public_bytes(pem), 0o644)
    _write(box_dir / LEAF_KEY, leaf_key.private_bytes(pem, raw, none), 0o600)
    _write(box_dir / LEAF_CERT, leaf.public_bytes(pem), 0o600)
    return box_dir / CA_CERT, box_dir / LEAF_CERT, box_dir / LEAF_KEY


MAX_IMAGE_BUNDLE = 4 * 1024 * 1024


def bundle(box_dir: Path, ca: Path, candidates: list[Path]) -> Path:
    """The box's CA bundle: the first regular file of ``candidates`` (the image's bundle, top
    layer first; at most 4 MiB, no symlink followed) followed by the box's CA certificate."""
    image = b""
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            image = f.read(MAX_IMAGE_BUNDLE)
        break
    out = box_dir / "secrets-bundle.pem"
    sep = b"" if not image or image.endswith(b"\n") else b"\n"
    _write(out, image + sep + ca.read_bytes(), 0o644)
    return out
