"""deploy/k8s/ checked offline (no cluster, no network): every manifest parses and has the expected kinds,
kustomization.yaml lists exactly the manifests, and the manifests are cross-checked against the code so they
cannot rot silently:

- every ``AUDITLOG_*`` variable (ConfigMap, env) is a field of :class:`auditlogkit.server.settings.Settings`, and each
  container's environment (ConfigMap + Secret example + env, ``$(VAR)`` expanded as the kubelet does) builds
  valid Settings (also with the ConfigMap switched to Kafka SASL_SSL); other variables are used (``$(VAR)`` or ``--password-env``), Secret keys exist;
- every container's command/args parse with the project's own parsers (``auditlogkit.server.app.cli.build_parser``, and
  ``python -m auditlogkit.server.db.roles`` run with ``--apply`` against a fake ClickHouse client);
- probes, ports and Prometheus annotations match the code: the API's paths are GET routes of
  ``create_app``'s app, the consumer's are answered by ``auditlogkit.consumers.health.HealthServer`` (run on loopback) and its liveness
  stays 200 for a worker that is merely behind; ports are the configured ones;
- ``terminationGracePeriodSeconds`` exceeds ``AUDITLOG_CONSUMER_SHUTDOWN_TIMEOUT_S``;
- every pod/container is non-root, read-only root filesystem, no privilege escalation, drops ALL capabilities;
- the service users the migrate Job creates are those (and the passwords) the Deployments log in with
  (``AUDITLOG_CLICKHOUSE_USER``, and ``AUDITLOG_CLICKHOUSE_PASSWORD`` from the same Secret key); no
  ``AUDITLOG_CLICKHOUSE_URL`` carries credentials, and passwords full of URL-special characters reach the
  ClickHouse client (and ``auditlogkit.server.db.roles``) unchanged;
- the example Secret's ``jwt-secret`` / ``server-secret`` stop the API and the consumers (they are placeholders);
  both share ``server-secret``; the API checks ``aud``/``iss`` and believes ``X-Forwarded-For`` only from the
  ConfigMap's ingress pod CIDR;
- with ``kubernetes-validate`` installed: each object against the bundled Kubernetes JSON schemas (strict);
  with ``kubectl``/``kustomize`` on PATH: ``kustomize build`` renders.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from auditlogkit.server.app.cli import build_parser
from auditlogkit.server.db import roles
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import credentials

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"

#: Every file of deploy/k8s and the (apiVersion, kind) of its documents, in order. A new file must be added here.
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "kustomization.yaml": [("kustomize.config.k8s.io/v1beta1", "Kustomization")],
    "namespace.yaml": [("v1", "Namespace")],
    "configmap.yaml": [("v1", "ConfigMap")],
    "secret.example.yaml": [("v1", "Secret")],
    "migrate-job.yaml": [("batch/v1", "Job")],
    "consumer.yaml": [("apps/v1", "Deployment"), ("policy/v1", "PodDisruptionBudget")],
    "api.yaml": [("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget")],
    "stream.yaml": [("apps/v1", "Deployment"), ("policy/v1", "PodDisruptionBudget")],
    "networkpolicy.yaml": [("networking.k8s.io/v1", "NetworkPolicy")] * 4,
}
OTHER_FILES = {"README.md"}
#: Examples the operator copies; never kustomize resources (applying one would overwrite the real object).
NOT_APPLIED = {"secret.example.yaml"}
IMAGE = "auditlog:local"
ROLES_COMMAND = ["python", "-m", "auditlogkit.server.db.roles"]
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
#: what the operator puts in place of the example secrets, which the processes refuse (see
#: test_the_example_secrets_stop_the_api_and_the_consumers)
FILLED = {"jwt-secret": "k8s-test-jwt-secret-0123456789abcdef0123456789",
          "server-secret": "k8s-test-server-secret-0123456789abcdef0123456789"}


# ----- loading ------------------------------------------------------------------------------------------
def load(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d is not None]
    assert all(isinstance(d, dict) for d in docs), name
    return docs


def manifests() -> dict[str, list[dict[str, Any]]]:
    return {name: load(name) for name in EXPECTED if name != "kustomization.yaml"}


def objects() -> list[dict[str, Any]]:
    return [d for name, docs in manifests().items() for d in docs]


def one(kind: str, component: str | None = None) -> dict[str, Any]:
    found = [o for o in objects() if o["kind"] == kind
             and (component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component)]
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def config_data() -> dict[str, str]:
    data = one("ConfigMap")["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings (quote numbers)"
    return dict(data)


def secret_data() -> dict[str, str]:
    return dict(one("Secret")["stringData"])


def workloads() -> list[dict[str, Any]]:
    return [o for o in objects() if o["kind"] in ("Deployment", "Job")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def all_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for w in workloads():
        for c in containers(w):
            yield f"{w['kind']}/{w['metadata']['name']}/{c['name']}", c


def container_env(c: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order, ``$(VAR)``
    expanded from what is defined before (an unresolved reference fails here: the kubelet would leave it as
    is). Secret values come from secret.example.yaml, its example secrets replaced as it says (:data:`FILLED`)."""
    cm, secret = one("ConfigMap"), one("Secret")
    values = {**secret_data(), **{k: v for k, v in FILLED.items() if k in secret_data()}}
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            assert src["configMapRef"]["name"] == cm["metadata"]["name"]
            env.update(config_data())
        else:
            assert src["secretRef"]["name"] == secret["metadata"]["name"]
            env.update(secret_data())
    for e in c.get("env", []):
        name = e["name"]
        if "value" in e:
            value = str(e["value"])
            for ref in VAR_REF.findall(value):
                assert ref in env, f"{name}: $({ref}) is not defined before it"
            env[name] = VAR_REF.sub(lambda m: env[m.group(1)], value)
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"], name
            assert ref["key"] in values, f"{name}: no key {ref['key']!r} in the Secret"
            env[name] = values[ref["key"]]
        else:
            ref = e["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == cm["metadata"]["name"], name
            env[name] = config_data()[ref["key"]]
    return env


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No AUDITLOG_* from the test runner's environment leaks into the settings built here."""
    for k in list(os.environ):
        if k.startswith("AUDITLOG_"):
            monkeypatch.delenv(k)
    return monkeypatch


def apply_env(mp: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k in [k for k in os.environ if k.startswith("AUDITLOG_")]:
        mp.delenv(k)
    for k, v in env.items():
        mp.setenv(k, v)


def auditlog_args(c: dict[str, Any]) -> argparse.Namespace:
    """The container's command line parsed by ``auditlog``'s own parser (the image's ENTRYPOINT)."""
    assert c.get("command") in (None, ["auditlog"]), c.get("command")
    argv = [str(a) for a in c.get("args", [])]
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`auditlog {' '.join(argv)}` is not a valid command line")


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    assert port in named, f"no container port named {port!r}"
    return int(named[port])


def probes(c: dict[str, Any]) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert kind in c, f"{c['name']}: no {kind}"
        get = c[kind]["httpGet"]
        out[kind] = (get["path"], port_number(c, get["port"]))
    return out


def workload(component: str) -> dict[str, Any]:
    return one("Job" if component == "migrate" else "Deployment", component)


def env_entry(c: dict[str, Any], name: str) -> dict[str, Any]:
    (e,) = [e for e in c.get("env", []) if e["name"] == name] or [{}]
    assert e, f"{c['name']}: no env {name}"
    return e


def password_key(c: dict[str, Any]) -> str:
    """The Secret key of the container's ``AUDITLOG_CLICKHOUSE_PASSWORD`` (a secretKeyRef, never a literal)."""
    e = env_entry(c, "AUDITLOG_CLICKHOUSE_PASSWORD")
    assert "secretKeyRef" in e.get("valueFrom", {}), f"{c['name']}: the password must come from the Secret"
    key: str = e["valueFrom"]["secretKeyRef"]["key"]
    return key


# ----- files, kinds, kustomization ---------------------------------------------------------------------
def test_files_parse_with_the_expected_kinds() -> None:
    present = {p.name for p in K8S.iterdir()}
    assert present == set(EXPECTED) | OTHER_FILES, "new or missing files in deploy/k8s: update EXPECTED"
    for name, kinds in EXPECTED.items():
        docs = load(name)
        assert [(d.get("apiVersion"), d.get("kind")) for d in docs] == kinds, name
        for d in docs:
            if d["kind"] != "Kustomization":
                assert d["metadata"]["name"].startswith("auditlog"), name
                assert d["metadata"]["labels"]["app.kubernetes.io/name"] == "auditlog", name


def test_kustomization_lists_exactly_the_manifests() -> None:
    (k,) = load("kustomization.yaml")
    resources = k["resources"]
    assert len(resources) == len(set(resources))
    assert set(resources) == set(EXPECTED) - {"kustomization.yaml"} - NOT_APPLIED
    assert not NOT_APPLIED & set(resources), "an example Secret must never be applied"
    ns = one("Namespace")["metadata"]["name"]
    assert k["namespace"] == ns
    assert one("Secret")["metadata"].get("namespace") == ns, "the example Secret must go to the same namespace"
    for name, docs in manifests().items():
        for d in docs:
            assert d["metadata"].get("namespace") in (None, ns), f"{name}: let the kustomization set the namespace"


def test_kustomize_build_renders() -> None:
    if exe := shutil.which("kustomize"):
        cmd = [exe, "build", str(K8S)]
    elif exe := shutil.which("kubectl"):
        cmd = [exe, "kustomize", str(K8S)]
    else:
        pytest.skip("neither kustomize nor kubectl on PATH")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rendered = [d for d in yaml.safe_load_all(r.stdout) if d]
    expected = [d for name, docs in manifests().items() if name not in NOT_APPLIED for d in docs]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in expected)
    for d in rendered:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == one("Namespace")["metadata"]["name"]


@pytest.mark.parametrize("version", ["1.29", "latest"])
def test_objects_match_the_kubernetes_schemas(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    v = kv.latest_version() if version == "latest" else version
    for name, docs in manifests().items():
        for d in docs:
            try:
                kv.validate(d, v, strict=True)
            except kv.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{name} {d['kind']}/{d['metadata']['name']} (Kubernetes {v}): {path}: {exc.message}")


def test_schema_validation_can_fail() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    bad = json.loads(json.dumps(one("Deployment", "api")))
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True  # typo
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)


# ----- settings and variables ---------------------------------------------------------------------------
def test_every_auditlog_variable_is_a_setting() -> None:
    fields = {f"AUDITLOG_{name.upper()}" for name in Settings.model_fields}
    names = set(config_data()) | set(secret_data())
    for _, c in all_containers():
        names |= {e["name"] for e in c.get("env", [])}
    unknown = sorted(n for n in names if n.startswith("AUDITLOG_") and n not in fields)
    assert not unknown, f"not settings (pydantic-settings would ignore them silently): {unknown}"


def test_other_variables_and_secret_keys_are_used() -> None:
    used: set[str] = set()
    secret_keys_used: set[str] = set()
    for _, c in all_containers():
        args = [str(a) for a in c.get("args", [])]
        used |= {args[i + 1] for i, a in enumerate(args[:-1]) if a == "--password-env"}
        for e in c.get("env", []):
            used |= set(VAR_REF.findall(str(e.get("value", ""))))
            if "secretKeyRef" in e.get("valueFrom", {}):
                secret_keys_used.add(e["valueFrom"]["secretKeyRef"]["key"])
    defined = set(config_data()) | {e["name"] for _, c in all_containers() for e in c.get("env", [])}
    dead = sorted(n for n in defined if not n.startswith("AUDITLOG_") and n not in used)
    assert not dead, f"variables nothing reads: {dead}"
    assert secret_keys_used == set(secret_data()), "Secret keys and secretKeyRefs differ"


def test_example_secret_holds_no_real_secret() -> None:
    for key, value in secret_data().items():
        assert key.endswith("-user") or value.startswith("change-me"), key


@pytest.mark.parametrize("where", [w for w, _ in all_containers()])
def test_container_environment_builds_valid_settings(where: str, clean_env: pytest.MonkeyPatch) -> None:
    c = dict(all_containers())[where]
    env = container_env(c)
    apply_env(clean_env, env)
    s = Settings()
    assert not s.embedded, "every container talks to the ClickHouse server"
    u = urlparse(s.store_url)
    assert u.scheme in ("http", "https") and u.hostname and u.port
    assert u.username is None and u.password is None, "credentials belong in AUDITLOG_CLICKHOUSE_USER/_PASSWORD"
    assert s.clickhouse_user and s.clickhouse_password and s.clickhouse_password.get_secret_value()
    assert credentials(s) == {"username": s.clickhouse_user,
                              "password": secret_data()[password_key(c)]}
    assert s.kafka_bootstrap == config_data()["AUDITLOG_KAFKA_BOOTSTRAP"]


def test_no_clickhouse_url_carries_credentials() -> None:
    """Neither the ConfigMap nor any container puts a user or password into AUDITLOG_CLICKHOUSE_URL (as written,
    and as the kubelet expands it); every container sets AUDITLOG_CLICKHOUSE_USER/_PASSWORD instead."""
    raw = [("ConfigMap", config_data().get("AUDITLOG_CLICKHOUSE_URL", ""))]
    for where, c in all_containers():
        raw += [(where, str(e.get("value", ""))) for e in c.get("env", []) if e["name"] == "AUDITLOG_CLICKHOUSE_URL"]
        env = container_env(c)
        assert "AUDITLOG_CLICKHOUSE_URL" in env, where
        raw.append((f"{where} (expanded)", env["AUDITLOG_CLICKHOUSE_URL"]))
        assert {"AUDITLOG_CLICKHOUSE_USER", "AUDITLOG_CLICKHOUSE_PASSWORD"} <= set(env), where
        password_key(c)
    for where, url in raw:
        assert "@" not in url, f"{where}: credentials in AUDITLOG_CLICKHOUSE_URL {url!r}"
    for name in ("AUDITLOG_CLICKHOUSE_USER", "AUDITLOG_CLICKHOUSE_PASSWORD"):
        assert name not in config_data(), f"{name} is per container (and a password is no ConfigMap value)"


#: Passwords no URL could hold unencoded (and a kubelet-style ``$(VAR)`` that must stay literal).
AWKWARD = {"clickhouse-admin-password": "change-me a@b:c/d?e#f%41&g=h+i",
           "consumer-password": "change-me 'quoted' \"double\" \\ $(AUDITLOG_CLICKHOUSE_URL) ${X} [::1]",
           "api-password": "change-me ünïcödé € <xml> & ;|`",
           "streams-password": "change-me \t tab, 'single' ${HOME} $$ %s"}


def test_passwords_with_any_characters_reach_the_client(clean_env: pytest.MonkeyPatch) -> None:
    """The reason for AUDITLOG_CLICKHOUSE_PASSWORD: whatever the Secret holds is what the client sends and what
    ``auditlogkit.server.db.roles`` hashes for the service users (no URL encoding, no expansion)."""
    awkward = {**secret_data(), **AWKWARD}
    clean_env.setattr(sys.modules[__name__], "secret_data", lambda: dict(awkward))
    for where, c in all_containers():
        env = container_env(c)
        apply_env(clean_env, env)
        s = Settings()
        assert urlparse(s.store_url).hostname, where
        assert credentials(s)["password"] == awkward[password_key(c)], where
        if c.get("command") == ROLES_COMMAND:
            _, login, sent = run_roles(c, clean_env)
            assert login["password"] == awkward["clickhouse-admin-password"], where
            argv = [str(a) for a in c["args"]]
            created_pw = env[argv[argv.index("--password-env") + 1]]
            assert created_pw in AWKWARD.values(), where
            digest = hashlib.sha256(created_pw.encode()).hexdigest()
            assert any(f"sha256_hash BY '{digest}'" in s for s in sent), where


def test_every_container_starts_with_kafka_sasl_enabled(clean_env: pytest.MonkeyPatch) -> None:
    """Switching the ConfigMap to SASL_SSL (as its comment says) must not break any container: each one
    validates all settings, so each needs the SASL password reference."""
    sasl = {"AUDITLOG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "AUDITLOG_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "AUDITLOG_KAFKA_SASL_USERNAME": "auditlog"}
    for where, c in all_containers():
        env = container_env(c)
        assert "AUDITLOG_KAFKA_SECURITY_PROTOCOL" in env, where
        apply_env(clean_env, {**env, **sasl})
        s = Settings()
        assert s.kafka_sasl_password is not None, where
        assert s.kafka_sasl_password.get_secret_value() == secret_data()["kafka-sasl-password"], where


# ----- commands -----------------------------------------------------------------------------------------
class _FakeClient:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def command(self, sql: str) -> None:
        self.log.append(sql)

    def close(self) -> None:
        pass


def run_roles(c: dict[str, Any], mp: pytest.MonkeyPatch) -> tuple[str, dict[str, Any], list[str]]:
    """Run the container's ``python -m auditlogkit.server.db.roles ...`` with its environment, ClickHouse faked: the URL and
    the keyword arguments (credentials) it connects with, and the statements it sends."""
    assert c["command"] == ROLES_COMMAND
    argv = [str(a) for a in c["args"]]
    apply_env(mp, container_env(c))
    sent: list[str] = []
    urls: list[str] = []
    logins: list[dict[str, Any]] = []

    def fake_connect(url: str, database: str | None = None, **kwargs: Any) -> _FakeClient:
        urls.append(url)
        logins.append(kwargs)
        return _FakeClient(sent)

    mp.setattr("auditlogkit.server.store.connect", fake_connect)
    try:
        assert roles.main(argv) == 0
    except SystemExit as exc:
        pytest.fail(f"`python -m auditlogkit.server.db.roles {' '.join(argv)}` exits {exc.code}")
    assert len(urls) == 1 and sent, "with --apply the statements must be executed"
    return urls[0], logins[0], sent


def test_every_container_runs_a_real_command(clean_env: pytest.MonkeyPatch) -> None:
    for where, c in all_containers():
        if c.get("command") == ROLES_COMMAND:
            run_roles(c, clean_env)
        else:
            args = auditlog_args(c)
            assert callable(getattr(args, "func", None)), f"{where}: no subcommand"


def test_migrate_job_runs_what_compose_runs(clean_env: pytest.MonkeyPatch) -> None:
    job = workload("migrate")
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    first, *rest = containers(job)
    args = auditlog_args(first)
    assert args.command == "migrate" and args.roles is True and not args.print
    admin = {"username": secret_data()["clickhouse-admin-user"],
             "password": secret_data()["clickhouse-admin-password"]}
    apply_env(clean_env, container_env(first))
    s = Settings()
    assert credentials(s) == admin, "migrate runs with the admin credentials"
    assert len(rest) == 3
    created: dict[str, tuple[str, str, str]] = {}
    for c in rest:
        url, login, sent = run_roles(c, clean_env)
        assert login == admin, f"{c['name']}: roles must connect as the admin"
        assert url == s.store_url
        argv = [str(a) for a in c["args"]]
        user, role, pw_env = (argv[argv.index(f) + 1] for f in ("--user", "--role", "--password-env"))
        assert f"GRANT {roles.ROLE_ALIASES[role]} TO {user}" in sent
        ref = env_entry(c, pw_env)["valueFrom"]["secretKeyRef"]
        created[user] = (roles.ROLE_ALIASES[role], ref["key"], container_env(c)[pw_env])
    # the Deployments log in as exactly these users, with the password from the same Secret key
    for component, role in (("consumer", roles.WRITER), ("api", roles.READER), ("stream", roles.STREAMS)):
        (c,) = containers(workload(component))
        apply_env(clean_env, container_env(c))
        d = Settings()
        logs_in_as = d.clickhouse_user
        assert logs_in_as in created, f"{component} logs in as {logs_in_as}, which the Job does not create"
        assert created[logs_in_as] == (role, password_key(c), credentials(d)["password"]), component
        assert d.store_url == s.store_url, "one ClickHouse server"
    # the API reads and writes stream configuration as the deliverers' user (its own is read-only)
    (api,) = containers(workload("api"))
    apply_env(clean_env, container_env(api))
    d = Settings()
    pw = env_entry(api, "AUDITLOG_STREAMS_CLICKHOUSE_PASSWORD")["valueFrom"]["secretKeyRef"]["key"]
    assert d.streams_clickhouse_user in created and d.streams_clickhouse_password is not None
    assert created[d.streams_clickhouse_user] == (roles.STREAMS, pw, d.streams_clickhouse_password.get_secret_value())


def test_the_api_and_the_deliverers_share_the_streams_key(clean_env: pytest.MonkeyPatch) -> None:
    """The destinations' secrets the API seals are opened by the deliverers: one Secret key; its example value is
    refused by both (the key checker, as at start)."""
    from auditlogkit.query_api.streams.keys import StreamsKeyError, streams_key

    refs = {component: env_entry(containers(workload(component))[0], "AUDITLOG_STREAMS_KEY")["valueFrom"]
            ["secretKeyRef"]["key"] for component in ("api", "stream")}
    assert refs["api"] == refs["stream"]
    with pytest.raises(StreamsKeyError):
        streams_key(secret_data()[refs["api"]])
    (c,) = containers(workload("stream"))
    args = auditlog_args(c)
    assert args.command == "stream" and args.metrics_host == "0.0.0.0"
    assert args.metrics_port == port_number(c, "metrics") == port_number(c, c["livenessProbe"]["httpGet"]["port"])


# ----- consumer -----------------------------------------------------------------------------------------
def consumer_settings(mp: pytest.MonkeyPatch) -> tuple[dict[str, Any], argparse.Namespace, Settings]:
    from auditlogkit.consumers.cli import settings_from_args as _settings

    (c,) = containers(workload("consumer"))
    args = auditlog_args(c)
    assert args.command == "consume"
    apply_env(mp, container_env(c))
    return c, args, _settings(args)  # flags over AUDITLOG_*, exactly as `auditlog consume` does


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_consumer_probes_and_metrics_match_its_health_server(clean_env: pytest.MonkeyPatch) -> None:
    from auditlogkit.consumers.health import HealthServer

    dep = workload("consumer")
    c, args, s = consumer_settings(clean_env)
    assert args.no_create_topics, "topics belong to the operator (README.md)"
    assert s.consumer_metrics_host == "0.0.0.0", "probes and Prometheus need the pod address, not loopback"
    port = s.consumer_metrics_port
    assert port != 0, "the consumer must serve /metrics and /readyz"
    p = probes(c)
    assert {pt for _, pt in p.values()} == {port}
    assert p["readinessProbe"][0] == "/readyz"
    assert p["livenessProbe"][0] != "/readyz", "liveness must not kill a worker that is only behind"
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port

    # The real health server answers those paths as the probes need: ready -> all 200; a stalled worker
    # (behind, e.g. ClickHouse down) -> readiness 503 but liveness and startup still 200.
    statuses: list[dict[str, Any]] = [{"worker": "w0", "ready": True, "stalled": False}]
    srv = HealthServer("127.0.0.1", 0, lambda: statuses).start()
    try:
        base = f"http://127.0.0.1:{srv.port}"
        assert _get(base + ann["prometheus.io/path"]) == 200
        for path, _ in p.values():
            assert _get(base + path) == 200, path
        statuses[0] = {"worker": "w0", "ready": False, "stalled": True, "lag_total": 10_000}
        assert _get(base + p["readinessProbe"][0]) == 503
        assert _get(base + p["livenessProbe"][0]) == 200
        assert _get(base + p["startupProbe"][0]) == 200
    finally:
        srv.stop()


def test_consumer_shutdown_fits_the_grace_period(clean_env: pytest.MonkeyPatch) -> None:
    _, _, s = consumer_settings(clean_env)
    timeout = s.consumer_shutdown_timeout_s
    grace = pod_spec(workload("consumer"))["terminationGracePeriodSeconds"]
    assert grace > timeout + 5, f"grace {grace} s vs shutdown timeout {timeout} s: SIGKILL would cut the final commit"


def test_consumer_replicas_fit_the_partitions() -> None:
    replicas = workload("consumer")["spec"]["replicas"]
    compose = (ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8")
    m = re.search(r"--topic audit\.events --partitions (\d+)", compose)
    assert m, "deploy/compose.yaml no longer says how many partitions audit.events has"
    assert 1 <= replicas <= int(m.group(1)), "consumers beyond the partition count idle"


# ----- API ----------------------------------------------------------------------------------------------
def test_api_probes_are_routes_and_ports_match(clean_env: pytest.MonkeyPatch) -> None:
    from auditlogkit.query_api.core.app import create_app
    from auditlogkit.query_api.security.auth import TokenVerifier
    from auditlogkit.server.store import Store

    dep = workload("api")
    (c,) = containers(dep)
    args = auditlog_args(c)
    assert args.command == "api"
    apply_env(clean_env, container_env(c))
    s = Settings()
    host = args.host or s.api_host
    port = args.port if args.port is not None else s.api_port
    assert host == "0.0.0.0"
    assert TokenVerifier(s).configured, "the API needs a JWT secret or key"
    app = create_app(s, Store.from_settings(s))  # builds the app; connects to nothing
    # GET routes from the app's own OpenAPI document (the health routes are in it; app.routes nests
    # included routers differently across FastAPI versions)
    routes = {path for path, ops in app.openapi()["paths"].items() if "get" in ops}
    p = probes(c)
    assert {pt for _, pt in p.values()} == {port}
    assert p["readinessProbe"][0] == "/readyz" and p["livenessProbe"][0] == "/healthz"
    for path, _ in p.values():
        assert path in routes, path
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
    assert ann["prometheus.io/path"] in routes

    svc = one("Service", "api")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (sp,) = svc["spec"]["ports"]
    assert port_number(c, sp["targetPort"]) == port


# ----- workload shape and security ----------------------------------------------------------------------
def test_deployments_as_asked() -> None:
    for component in ("consumer", "api", "stream"):
        dep = workload(component)
        assert dep["spec"]["replicas"] == 2, component
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        pdb = one("PodDisruptionBudget", component)
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_pods_and_containers_are_locked_down() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    m = re.search(r"^USER (\d+):(\d+)", dockerfile, re.M)
    assert m, "the image must run as a numeric non-root user"
    for w in workloads():
        name = f"{w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        assert spec.get("automountServiceAccountToken") is False, name
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert (psc["runAsUser"], psc["runAsGroup"]) == (int(m.group(1)), int(m.group(2))), name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers(w):
            where = f"{name}/{c['name']}"
            assert c["image"] == IMAGE, where
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert not sc.get("privileged"), where
            assert sc.get("runAsNonRoot", True) is True and sc.get("runAsUser", 1) != 0, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: resources.{kind}"
            mounts = {vm["mountPath"]: vm["name"] for vm in c.get("volumeMounts", [])}
            assert set(mounts.values()) <= set(volumes), where
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be a writable emptyDir"


def test_network_policies_let_through_the_ports_in_use() -> None:
    policies = [o for o in objects() if o["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies), "default deny"
    for component in ("consumer", "api", "stream"):
        dep = workload(component)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        (c,) = containers(dep)
        allowed: set[int] = set()
        for p in policies:
            if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items():
                for rule in p["spec"].get("ingress", []):
                    allowed |= {port_number(c, pt["port"]) for pt in rule.get("ports", [])}
        assert {p["containerPort"] for p in c["ports"]} <= allowed, component


# ----- secrets, token claims, proxies -------------------------------------------------------------------
def test_the_example_secrets_stop_the_api_and_the_consumers(clean_env: pytest.MonkeyPatch) -> None:
    """The Secret applied as shipped (placeholders not replaced): the API and the consumers stop at start, naming
    the setting."""
    from pydantic import ValidationError

    for component, names in (("api", ("AUDITLOG_JWT_SECRET", "AUDITLOG_SERVER_SECRET")),
                             ("consumer", ("AUDITLOG_SERVER_SECRET",))):
        (c,) = containers(workload(component))
        env = container_env(c)
        for name in names:
            key = env_entry(c, name)["valueFrom"]["secretKeyRef"]["key"]
            apply_env(clean_env, {**env, name: secret_data()[key]})
            with pytest.raises(ValidationError, match=name):
                Settings()


def test_api_and_consumers_share_the_server_secret(clean_env: pytest.MonkeyPatch) -> None:
    """The API signs its own messages (self-audit, HTTP ingest) with the key the consumers check them with."""
    from auditlogkit.server.signing import Purpose

    keys: dict[str, str] = {}
    macs: set[bytes] = set()
    for component in ("api", "consumer"):
        (c,) = containers(workload(component))
        keys[component] = env_entry(c, "AUDITLOG_SERVER_SECRET")["valueFrom"]["secretKeyRef"]["key"]
        apply_env(clean_env, container_env(c))
        s = Settings()
        assert s.server_secret is not None, component
        macs.add(s.server_keys().mac(Purpose.MESSAGE, b"m"))
    assert keys["api"] == keys["consumer"] and len(macs) == 1


def _comment_above(text: str, key: str) -> str:
    lines = text.splitlines()
    (i,) = [n for n, line in enumerate(lines) if line.strip().startswith(f"{key}:")]
    block: list[str] = []
    while i > 0 and lines[i - 1].strip().startswith("#"):
        i -= 1
        block.insert(0, lines[i])
    return "\n".join(block)


def test_api_checks_token_claims_and_believes_only_its_ingress(clean_env: pytest.MonkeyPatch) -> None:
    """aud/iss are checked; X-Forwarded-For is believed from the ingress controller's pod CIDR only, an editable
    ConfigMap value that says what it is."""
    import ipaddress

    from auditlogkit.query_api.security.client_ip import proxy_options

    (c,) = containers(workload("api"))
    apply_env(clean_env, container_env(c))
    s = Settings()
    assert s.jwt_audience and s.jwt_issuer, "tokens minted for another service must not pass"
    nets = [ipaddress.ip_network(x) for x in s.forwarded_allow_ips]
    assert nets and all(n.prefixlen >= 8 for n in nets), "list the ingress controller's pods, not everyone"
    assert proxy_options(s)["proxy_headers"] is True
    comment = _comment_above((K8S / "configmap.yaml").read_text(encoding="utf-8"), "AUDITLOG_API_FORWARDED_ALLOW_IPS")
    assert "EDIT" in comment and "Ingress" in comment and "pod CIDR" in comment, comment
    for component in ("consumer", "migrate"):
        for c in containers(workload(component)):
            assert "AUDITLOG_API_FORWARDED_ALLOW_IPS" not in {e["name"] for e in c.get("env", [])}
