"""Kafka over TLS (``AUDITLOG_KAFKA_SECURITY_PROTOCOL=SSL``), end to end: every client of ours connects through it.

Tansu speaks plaintext only, so a TLS-terminating proxy on loopback stands in front of it and the broker advertises
the proxy's port: a client that ignored the security settings would talk plaintext to a TLS port and fail. The
certificates are made here (a throwaway CA and a server certificate for 127.0.0.1 / localhost).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.kafka import KafkaConnection, kafka_options
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics, free_port
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker, count_events, read_topic
from tests.factories import make_event, random_events
from tests.updemo import AUDITLOG

pytestmark = pytest.mark.timeout(120)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tls")
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("auditlog test CA", ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auditlog test CA")]),
               ca_key, ca=True)
    srv = _cert("localhost", srv_key, ca.subject, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["cert"].write_bytes(srv.public_bytes(pem))
    paths["key"].write_bytes(srv_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return paths


class TlsProxy:
    """TLS on 127.0.0.1:``port``, plaintext to the broker behind it; runs its own event loop in a thread."""

    def __init__(self, port: int, upstream: int, certs: dict[str, Path]) -> None:
        self.port, self.upstream = port, upstream
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(certs["cert"], certs["key"])
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.ctx))
        self.ready.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        with contextlib.suppress(Exception):
            w.close()

    def __enter__(self) -> TlsProxy:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def tls_bootstrap(certs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tls_port = free_port()
    log = tmp_path_factory.mktemp("tls-broker") / "tansu.log"
    with EmbeddedBroker(advertised_port=tls_port, log_file=log) as broker, TlsProxy(tls_port, broker.port, certs):
        yield f"127.0.0.1:{tls_port}"


def tls_settings(bootstrap: str, certs: dict[str, Path], store: Store, tmp_path: Path) -> Settings:
    sfx = os.urandom(4).hex()
    return Settings(data_dir=tmp_path, kafka_bootstrap=bootstrap, kafka_security_protocol="SSL",
                    kafka_ssl_cafile=certs["ca"], topic=f"tls.{sfx}", dlq_topic=f"tls.{sfx}.dlq",
                    consumer_group=f"g-{sfx}", clickhouse_url=store.url, clickhouse_database=store.database,
                    session_timeout_ms=3000, batch_max_seconds=0.2)


async def test_emit_consume_and_dead_letter_over_tls(tls_bootstrap: str, certs: dict[str, Path], store: Store,
                                                     tmp_path: Path) -> None:
    s = tls_settings(tls_bootstrap, certs, store, tmp_path)
    kafka = KafkaConnection.from_settings(s)
    await ensure_topics(kafka, [s.topic, s.dlq_topic], 3)

    events = random_events(40, seed=11)
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    env = {**os.environ, "AUDITLOG_KAFKA_BOOTSTRAP": tls_bootstrap, "AUDITLOG_KAFKA_SECURITY_PROTOCOL": "SSL",
           "AUDITLOG_KAFKA_SSL_CAFILE": str(certs["ca"]), "AUDITLOG_TOPIC": s.topic}
    done = await asyncio.to_thread(subprocess.run, [AUDITLOG, "emit", str(ndjson)], env=env, capture_output=True,
                                   text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"40 event(s) published to {s.topic} on {tls_bootstrap} (SSL)" in done.stdout

    bad = json.dumps(make_event(action="vm.explode")).encode()  # dead-lettered: the DLQ producer uses TLS too
    producer = AIOKafkaProducer(**kafka_options(kafka))
    await producer.start()
    try:
        await producer.send_and_wait(s.topic, bad, key=b"acme")
    finally:
        await producer.stop()

    async with BackgroundWorker(ConsumerWorker(s, store)) as bw:
        await bw.until(lambda st: st["stored"] + st["dead_lettered"] >= 41, 60)
    assert count_events(store) == 40
    dlq = await read_topic(kafka, s.dlq_topic)
    assert [r.value for r in dlq] == [bad]


async def test_plaintext_client_cannot_use_the_tls_listener(tls_bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=tls_bootstrap, request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()


async def test_a_client_that_does_not_trust_the_ca_is_refused(tls_bootstrap: str, tmp_path: Path) -> None:
    kafka = KafkaConnection(tls_bootstrap, security_protocol="SSL")  # system CAs only: the test CA is unknown
    producer = AIOKafkaProducer(**kafka_options(kafka), request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()


def test_sasl_needs_credentials_and_the_cli_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="AUDITLOG_KAFKA_SASL_MECHANISM"):
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc")
    env = {**os.environ, "AUDITLOG_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "AUDITLOG_DATA_DIR": str(tmp_path)}
    done = subprocess.run([AUDITLOG, "consume"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "auditlog: invalid settings:" in done.stderr and "AUDITLOG_KAFKA_SASL_USERNAME" in done.stderr
    assert "Traceback" not in done.stderr


def test_sasl_ssl_options() -> None:
    s = Settings(kafka_bootstrap="k1:9093,k2:9093", kafka_security_protocol="SASL_SSL",
                 kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="svc", kafka_sasl_password="pw")
    opts = kafka_options(KafkaConnection.from_settings(s))
    assert opts["bootstrap_servers"] == "k1:9093,k2:9093" and opts["security_protocol"] == "SASL_SSL"
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"], opts["sasl_plain_password"]) == \
        ("SCRAM-SHA-512", "svc", "pw")
    assert isinstance(opts["ssl_context"], ssl.SSLContext) and opts["ssl_context"].check_hostname
    assert "pw" not in str(KafkaConnection.from_settings(s)) and "pw" not in repr(s)
