"""A private CA and server certificates for the local stack (Kafka's SASL_SSL listener).

`python -m lotse_kit.tls DIR [--host NAME ...]` makes, idempotently:

- `ca.pem` (the CA certificate clients trust) and `ca.key` (0600), kept for ten years;
- `broker.pem` (0600): the broker's private key (unencrypted PKCS#8, readable only by its owner)
  followed by its certificate, the form Kafka's `ssl.keystore.type=PEM` reads. Reissued when it
  expires within 30 days, when the CA changed, or when the host names asked for changed.

A production district uses its own PKI; only the CA file's path is configuration for clients.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .kafka import write_secret_file

RENEW_BEFORE = dt.timedelta(days=30)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _ca(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    key_file, cert_file = directory / "ca.key", directory / "ca.pem"
    if key_file.exists() and cert_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc - _now() > RENEW_BEFORE:
            return key, cert, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lotse local stack"), x509.NameAttribute(NameOID.COMMON_NAME, "Lotse local CA")]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_secret_file(key_file, _key_pem(key))
    cert_file.write_text(_cert_pem(cert))
    return key, cert, True


def _server_current(path: Path, ca: x509.Certificate, hosts: list[str]) -> bool:
    if not path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())  # the first certificate in the file
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return cert.issuer == ca.subject and cert.not_valid_after_utc - _now() > RENEW_BEFORE and san == _san(hosts)


def ensure_server_certificate(directory: Path, name: str, hosts: list[str]) -> bool:
    """Makes `<name>.pem` (key + certificate) signed by the directory's CA; True when anything was (re)issued."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_cert, new_ca = _ca(directory)
    target = directory / f"{name}.pem"
    if not new_ca and _server_current(target, ca_cert, hosts):
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=397))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # Certificate first: Python's ssl and `_server_current` read the first PEM block.
    write_secret_file(target, _cert_pem(cert) + _key_pem(key))
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lotse_kit.tls", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("directory", type=Path)
    ap.add_argument("--name", default="broker")
    ap.add_argument("--host", action="append", dest="hosts", help="a DNS name or IP address the server answers on (repeatable)")
    args = ap.parse_args(argv)
    hosts = args.hosts or ["127.0.0.1", "localhost"]
    issued = ensure_server_certificate(args.directory, args.name, hosts)
    print(f"{args.directory / (args.name + '.pem')}: {'issued' if issued else 'current'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
