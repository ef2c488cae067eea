"""A throwaway CA and a localhost server certificate, so clients verify TLS for real.

The proxy trusts the CA through ``REQUESTS_CA_BUNDLE``; nothing is disabled, so tests exercise
the same verification path production does.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=7)
CLOCK_SKEW = datetime.timedelta(minutes=5)


class CertificatePaths(NamedTuple):
    """PEM files: the CA to trust, and the server's certificate chain and private key."""

    ca_bundle: Path
    cert: Path
    key: Path


def generate_certificates(directory: str | Path) -> CertificatePaths:
    """Write ``ca.pem``, ``server.pem`` and ``server-key.pem`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _server_certificate(server_key, ca_key, ca_cert)
    paths = CertificatePaths(
        directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    )
    paths.ca_bundle.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    paths.key.write_bytes(key_pem)
    paths.key.chmod(0o600)
    return paths


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - CLOCK_SKEW).not_valid_after(now + VALIDITY)


def _ca_certificate(ca_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A CA certificate that strict X.509 verification (Python 3.13's default) accepts."""
    public_key = ca_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("auth0-m2m-proxy emulated tenant CA"))
        .issuer_name(_name("auth0-m2m-proxy emulated tenant CA"))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return _validity(builder).sign(ca_key, hashes.SHA256())


def _server_certificate(
    server_key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
) -> x509.Certificate:
    """Valid for ``localhost`` and ``127.0.0.1``, signed by the throwaway CA."""
    alternative_names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    return _validity(builder).sign(ca_key, hashes.SHA256())


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
