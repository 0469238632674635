"""A test CA and broker certificates made with cryptography, as an operator's CA would make them:
the controller-side plan tests (tests/test_plan_tls.py) and the bad-input cases on a real host
(molecule/shared/tests/test_bad_input.py) use the same."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


CA_KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.datetime.now(datetime.UTC)
CA = (
    x509.CertificateBuilder()
    .subject_name(_name("test CA"))
    .issuer_name(_name("test CA"))
    .public_key(CA_KEY.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(NOW)
    .not_valid_after(NOW + datetime.timedelta(days=30))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(CA_KEY, hashes.SHA256())
)
PKCS8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
CA_KEY_PEM = CA_KEY.private_bytes(*PKCS8).decode()
CA_PEM = _pem(CA)


def server_cert_and_key(*names: str) -> tuple[str, str]:
    """A broker certificate signed by the CA, naming `names` (DNS names or IP addresses), and its key."""
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(CA.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(CA_KEY, hashes.SHA256())
    )
    return _pem(cert), key.private_bytes(*PKCS8).decode()


def server_cert(*names: str) -> str:
    return server_cert_and_key(*names)[0]
