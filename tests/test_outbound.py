"""The guarded client for URLs tenants type: internal addresses refused in every spelling, on the address
actually connected to, no redirects followed, TLS checked against the name. Every receiver here is on
loopback, reached through the operator's allowlist; nothing leaves this machine."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clouddigit import outbound

# (URL, what the refusal says)
INTERNAL_URLS = [
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://2130706433/", "write the address 2130706433 as four decimal numbers"),
    ("http://0177.0.0.1/", "write the address 0177.0.0.1 as four decimal numbers"),
    ("http://127.1/", "write the address 127.1 as four decimal numbers"),
    ("http://0x7f000001/", "write the address 0x7f000001 as four decimal numbers"),
    ("http://0x7f.0.0.1/", "write the address 0x7f.0.0.1 as four decimal numbers"),
    ("http://127.0.0.1./", "write the address 127.0.0.1. as four decimal numbers"),
    ("http://0/", "write the address 0 as four decimal numbers"),
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("http://[::]/", ":: is an unspecified address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1 is a loopback address"),
    ("http://[::ffff:7f00:1]/", "::ffff:7f00:1 is a loopback address"),
    ("http://[::127.0.0.1]/", "::7f00:1 is a reserved address"),
    ("http://[2002:7f00:1::]/", "2002:7f00:1:: is a loopback address"),  # 6to4
    ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe is a link-local address"),  # NAT64
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "a private address"),  # Teredo
    ("http://localhost/", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://LOCALHOST:9333/col/delete", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://[fd00::1]/", "fd00::1 is a private address"),
    ("http://[fec0::1]/", "fec0::1 is a site-local address"),
    ("http://100.64.0.1/", "100.64.0.1 is a shared (carrier-grade NAT) address"),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("http://[ff02::1]/", "ff02::1 is a multicast address"),
    ("http://240.0.0.1/", "240.0.0.1 is a private address"),
    ("http://192.0.2.1/", "192.0.2.1 is a private address"),  # documentation: not routed
    ("https://127.0.0.1:8443/hook", "127.0.0.1 is a loopback address"),
    ("http://evil@127.0.0.1/", "must not carry a user name or password"),
    ("http://hooks.example:secret@127.0.0.1/", "must not carry a user name or password"),
    ("http://127.0.0.1\\@hooks.example/", "spaces, control characters or backslashes"),
    ("http://hooks.example\\@127.0.0.1/", "spaces, control characters or backslashes"),
    ("http://hooks.example /x", "spaces, control characters or backslashes"),
    (" http://127.0.0.1/", "spaces, control characters or backslashes"),
    ("http://127.0.0.1/\n", "spaces, control characters or backslashes"),
    ("http://127.0.0.1\t/", "spaces, control characters or backslashes"),
    ("http://[fe80::1%25eth0]/", "must not have a zone"),
    ("http://hooks.example:0/", "port must be between 1 and 65535"),
    ("http://hooks.example:99999/", "host or port is malformed"),
    ("http://hooks_\u212a.example/", "non-ASCII"),
    ("ftp://hooks.example/", "must start with http:// or https://"),
    ("file:///etc/passwd", "must start with http:// or https://"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "must start with http:// or https://"),
    ("http:///path-only", "must start with http:// or https://"),
    ("http://-bad-.example/", "-bad-.example is not a valid host name"),
]


@pytest.mark.parametrize(("url", "reason"), INTERNAL_URLS)
def test_internal_addresses_are_refused_in_every_spelling(url, reason):
    with pytest.raises(outbound.Refused) as refused:
        outbound.check(url)
    assert reason in str(refused.value)

    with pytest.raises(outbound.Refused):
        outbound.post(url, body=b"{}", headers={}, timeout=1)


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "127.1", "0x7f000001", "0"])
def test_what_getaddrinfo_makes_of_odd_spellings_would_be_refused_too(host):
    """getaddrinfo reads these as addresses; the strict parse refuses them first, and the address check
    would refuse what they resolve to anyway."""
    addresses = {ipaddress.ip_address(address) for address in outbound.resolve(host, 80)}
    assert addresses and all(outbound.refusal(address) for address in addresses)


def test_a_name_resolving_to_an_internal_address_is_refused(dns):
    dns["hooks.corp.example"] = ["10.20.0.5"]
    dns["half.example"] = ["93.184.215.14", "127.0.0.1"]  # one bad answer among good ones

    with pytest.raises(
        outbound.Refused, match=r"hooks.corp.example resolves to 10.20.0.5, a private address"
    ):
        outbound.check("https://hooks.corp.example/x")
    with pytest.raises(outbound.Refused, match=r"half.example resolves to 127.0.0.1, a loopback address"):
        outbound.check("https://half.example/x")


def test_a_public_name_or_address_passes(dns):
    dns["hooks.slack.example"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]

    target = outbound.check("https://Hooks.Slack.example/services/T000/B000/token?x=1#frag")

    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "hooks.slack.example",
        443,
        "/services/T000/B000/token?x=1",
    )
    assert outbound.check("http://93.184.215.14:8080/").port == 8080


def test_a_name_that_does_not_resolve_is_an_error_not_a_refusal():
    with pytest.raises(outbound.OutboundError, match="no-such-host.invalid does not resolve") as error:
        outbound.check("https://no-such-host.invalid/x")
    assert not isinstance(error.value, outbound.Refused)


def test_the_operator_allowlist_lets_an_on_premises_network_through(settings):
    with pytest.raises(outbound.Refused):
        outbound.check("http://10.20.0.5/hook")

    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.20.0.0/24", "fd00:20::/64"]

    assert outbound.check("http://10.20.0.5/hook").host == "10.20.0.5"
    assert outbound.check("http://[fd00:20::5]/hook").host == "fd00:20::5"
    with pytest.raises(outbound.Refused, match="10.21.0.5 is a private address"):
        outbound.check("http://10.21.0.5/hook")


# --- On the wire ----------------------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append({"path": self.path, "host": self.headers["Host"], "body": body})
        self.send_response(self.server.status)
        for name, value in self.server.answer_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):  # noqa: A002  (the base class's name)
        pass


def _receiver(address: str, port: int = 0, status: int = 204, headers: dict | None = None):
    server = ThreadingHTTPServer((address, port), _Receiver)
    server.posts, server.status, server.answer_headers = [], status, headers or {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def receivers():
    started = []

    def start(*args, **kwargs):
        started.append(_receiver(*args, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_the_connection_goes_to_the_address_that_was_checked(dns, settings, receivers, monkeypatch):
    """DNS rebinding: the name answers an allowed address for the check and 127.0.0.1 afterwards. The
    client resolves once and connects to what it checked, so the second answer is never used."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.2/32"]  # stands for a public address
    allowed = receivers("127.0.0.2")
    port = allowed.server_port
    internal = receivers("127.0.0.1", port)
    answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])
    asked = []

    def rebinding(host, port):
        asked.append(host)
        return next(answers)

    monkeypatch.setattr(outbound, "resolve", rebinding)

    answer = outbound.post(
        f"http://rebind.example:{port}/hook?x=1", body=b'{"text": "hi"}', headers={}, timeout=2
    )

    assert answer.status == 204 and asked == ["rebind.example"]
    assert allowed.posts == [
        {"path": "/hook?x=1", "host": f"rebind.example:{port}", "body": b'{"text": "hi"}'}
    ]
    assert internal.posts == []

    with pytest.raises(outbound.Refused, match="rebind.example resolves to 127.0.0.1, a loopback address"):
        outbound.post(f"http://rebind.example:{port}/hook", body=b"{}", headers={}, timeout=2)
    assert internal.posts == []


def test_a_redirect_is_answered_not_followed(settings, receivers):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    inside = receivers("127.0.0.1")
    redirecting = receivers(
        "127.0.0.2", status=307, headers={"Location": f"http://127.0.0.1:{inside.server_port}/col/delete"}
    )

    answer = outbound.post(
        f"http://127.0.0.2:{redirecting.server_port}/hook", body=b"{}", headers={}, timeout=2
    )

    assert (answer.status, answer.reason) == (307, "Temporary Redirect")
    assert answer.location == f"http://127.0.0.1:{inside.server_port}/col/delete"
    assert len(redirecting.posts) == 1 and inside.posts == []


def _certificate(name: str, key, issuer_name, issuer_key, ca: bool):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch, settings, receivers, dns):
    """An HTTPS receiver on 127.0.0.2 (allowlisted) with a certificate for hooks.test from a test CA that
    the client trusts (and nothing else); it records the SNI it was asked for."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = _certificate("test CA", ca_key, ca_name, ca_key, ca=True)
    certificate = _certificate("hooks.test", key, ca_name, ca_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    dns["hooks.test"] = dns["other.test"] = ["127.0.0.2"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = receivers("127.0.0.2")
    server.sni = []
    context.sni_callback = lambda sock, name, context: server.sni.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def test_https_is_pinned_to_the_checked_address_and_still_checks_the_name(tls_receiver):
    port = tls_receiver.server_port

    answer = outbound.post(f"https://hooks.test:{port}/hook", body=b"{}", headers={}, timeout=2)

    assert answer.status == 204
    assert tls_receiver.sni == ["hooks.test"] and tls_receiver.posts[0]["host"] == f"hooks.test:{port}"

    with pytest.raises(
        outbound.OutboundError, match=f"could not connect to other.test:{port}: Hostname mismatch"
    ):
        outbound.post(f"https://other.test:{port}/hook", body=b"{}", headers={}, timeout=2)
    assert len(tls_receiver.posts) == 1


def test_a_receiver_trickling_its_answer_is_cut_at_the_deadline(settings):
    """Each byte comes well within the socket timeout; the exchange as a whole still ends on time."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                try:
                    connection.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(outbound.OutboundError, match=r"did not answer within 0.5 s"):
            outbound.post(
                f"http://127.0.0.1:{listener.getsockname()[1]}/", body=b"{}", headers={}, timeout=0.5
            )
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert time.monotonic() - started < 2
