"""deploy/ checked offline (no Docker needed): both compose files valid per the Compose specification
(`check-jsonschema --builtin-schema vendor.compose-spec`, the CLI, as CI runs it), the Dockerfile multi-stage,
non-root and installing the app with the README's command, the ClickHouse XML well-formed, the migrate job's
steps parse, and the app services log in with AUDITLOG_CLICKHOUSE_USER/_PASSWORD (no credentials in the URL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = [DEPLOY / "compose.yaml", DEPLOY / "cluster" / "compose.yaml"]


def _check_jsonschema() -> str:
    exe = Path(sys.executable).parent / "check-jsonschema"
    return str(exe) if exe.exists() else "check-jsonschema"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compose_file_is_valid(path: Path) -> None:
    r = subprocess.run([_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_validation_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  x:\n    image: a\n    ports: {not: valid}\n    restart: sometimes\n")
    r = subprocess.run([_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0


def test_compose_runs_what_issue_6_asks() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert "image: apache/kafka:" in text and "KAFKA_PROCESS_ROLES: broker,controller" in text  # KRaft
    assert "image: clickhouse/clickhouse-server:" in text
    assert re.search(r"consumer:\n(?:.*\n)*?\s+replicas: 2", text)
    assert 'command: ["api", "--port", "8000"]' in text
    assert "service_completed_successfully" in text and "auditlog migrate" in text
    for published in re.findall(r'- "([\d.]+):\d+:\d+"', text):
        assert published == "127.0.0.1"  # nothing published beyond the host's loopback


def test_dockerfile_multistage_nonroot_same_install() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert re.search(r"^FROM python:\S+-slim", text, re.M)
    assert re.search(r"^RUN pip install -c requirements.lock '\.\[server\]'$", text, re.M), "the locked server install"
    assert re.search(r"^USER 10001", text, re.M)
    from tests.distribution import INSTALLED_AT  # every folder the wheel is built from, and the links
    copied = set(re.findall(r"^COPY (\S+) \./\1$", text, re.M))
    assert copied >= {*INSTALLED_AT, "auditlogkit"}, sorted({*INSTALLED_AT, "auditlogkit"} - copied)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert all(f"!{d}/**" in ignore for d in (*INSTALLED_AT, "auditlogkit")) and "!requirements.lock" in ignore
    readme = ROOT / "README.md"
    if readme.exists():
        assert "pip install -c requirements.lock '.[server]'" in readme.read_text(), \
            "the README's install command must be the Dockerfile's"


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.xml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_clickhouse_xml_is_well_formed(path: Path) -> None:
    assert ET.parse(path).getroot().tag == "clickhouse"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compose_migrate_job_commands_parse(path: Path) -> None:
    """Each step of the one-shot migrate job is a command line our parsers accept (a wrong flag order once made
    the service users silently absent: `service ... --apply` was rejected by argparse)."""
    import shlex

    import yaml

    from auditlogkit.server.app.cli import build_parser
    from auditlogkit.server.db import roles

    command = yaml.safe_load(path.read_text())["services"]["migrate"]["command"]
    steps = [shlex.split(step) for step in " ".join(command).split("&&")]
    assert len(steps) >= 3
    for argv in steps:
        if argv[:3] == ["python", "-m", "auditlogkit.server.db.roles"]:
            args = roles.build_parser().parse_args(argv[3:])
            assert args.apply, argv
        else:
            assert argv[0] == "auditlog", argv
            build_parser().parse_args(argv[1:])
    assert any(a[3:4] == ["service"] and "writer" in a for a in steps)
    assert any(a[3:4] == ["service"] and "reader" in a for a in steps)
    assert any(a[3:4] == ["service"] and "streams" in a for a in steps)


_REQUIRED = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?\?[^}]*)?\}$")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def _compose_var(value: object) -> str:
    """The compose variable a value is exactly (``${VAR:?msg}``): a password must be one, never a literal."""
    m = _REQUIRED.match(str(value))
    assert m, f"expected ${{VAR:?...}}, got {value!r}"
    return m.group(1)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compose_clickhouse_credentials_outside_the_url(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AUDITLOG_CLICKHOUSE_URL carries credentials; the app services log in with AUDITLOG_CLICKHOUSE_USER /
    _PASSWORD: the migrate job as the server's admin, consumer and API as the service users the job creates, with
    the passwords it sets. With URL-hostile passwords interpolated, Settings hands them to the client unchanged."""
    import shlex

    import yaml

    from auditlogkit.server.settings import Settings
    from auditlogkit.server.store import credentials

    services = yaml.safe_load(path.read_text())["services"]
    servers = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("clickhouse/clickhouse-server")}
    assert servers
    admin_users = {s["environment"]["CLICKHOUSE_USER"] for s in servers.values()}
    admin_vars = {_compose_var(s["environment"]["CLICKHOUSE_PASSWORD"]) for s in servers.values()}
    assert len(admin_users) == len(admin_vars) == 1
    apps = {n: s for n, s in services.items() if s.get("image") == "auditlog:local"}
    assert set(apps) == {"migrate", "consumer", "api", "stream"}

    # the service users the migrate job creates: user -> compose variable of the password it sets
    migrate_env = apps["migrate"]["environment"]
    created: dict[str, str] = {}
    for step in " ".join(apps["migrate"]["command"]).split("&&"):
        argv = shlex.split(step)
        if "service" in argv:
            user, pw_env = (argv[argv.index(f) + 1] for f in ("--user", "--password-env"))
            created[user] = _compose_var(migrate_env[pw_env])
    expected = {"migrate": (admin_users.pop(), admin_vars.pop()),
                "consumer": ("auditlog_consumer", created["auditlog_consumer"]),
                "api": ("auditlog_api", created["auditlog_api"]),
                "stream": ("auditlog_streams", created["auditlog_streams"])}
    api_env = apps["api"]["environment"]
    assert api_env["AUDITLOG_STREAMS_CLICKHOUSE_USER"] == "auditlog_streams"  # its own user is read-only
    assert _compose_var(api_env["AUDITLOG_STREAMS_CLICKHOUSE_PASSWORD"]) == created["auditlog_streams"]
    assert _compose_var(api_env["AUDITLOG_STREAMS_KEY"]) == _compose_var(apps["stream"]["environment"]["AUDITLOG_STREAMS_KEY"])

    awkward = "p@ss:w/rd?#%41 &<x> 'q' \"d\" \\ ü"
    for name, svc in apps.items():
        env = {k: str(v) for k, v in svc["environment"].items()}
        url = env["AUDITLOG_CLICKHOUSE_URL"]
        assert "@" not in url and "$" not in url, f"{name}: credentials in AUDITLOG_CLICKHOUSE_URL {url!r}"
        host = url.split("://", 1)[1].rsplit(":", 1)[0]
        assert host in servers, f"{name}: {host} is not a ClickHouse service"
        user, pw_var = expected[name]
        assert env["AUDITLOG_CLICKHOUSE_USER"] == user, name
        assert _compose_var(env["AUDITLOG_CLICKHOUSE_PASSWORD"]) == pw_var, name

        values = {pw_var: f"{name}-{awkward}"}

        def interpolate(m: re.Match[str], values: dict[str, str] = values) -> str:
            """Compose's: our value, else the ':-' default, else a dummy for a required variable."""
            return values.get(m.group(1), m.group(3) if m.group(2) == "-" else "x" * 40)

        for k in [k for k in os.environ if k.startswith("AUDITLOG_")]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, _INTERPOLATION.sub(interpolate, v))
        s = Settings()
        assert s.store_url == url and not s.embedded, name
        assert credentials(s) == {"username": user, "password": values[pw_var]}, name


def _env_example() -> dict[str, str]:
    """deploy/.env.example as compose reads it: variable -> value."""
    out: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            out[name.strip()] = value.strip()
    return out


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compose_secrets_token_claims_and_proxies(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API and the consumers share AUDITLOG_SERVER_SECRET (one required variable); the API checks aud/iss and
    believes X-Forwarded-For from no one unless the operator lists a proxy. deploy/.env.example defines every
    variable the file requires; copied unchanged, its example secrets stop the API and the consumers at start,
    and with the secrets replaced they start with the audience, issuer and shared secret."""
    import yaml
    from pydantic import ValidationError

    from auditlogkit.server.settings import Settings

    text = path.read_text()
    services = yaml.safe_load(text)["services"]
    api, consumer = services["api"]["environment"], services["consumer"]["environment"]
    assert _compose_var(api["AUDITLOG_SERVER_SECRET"]) == _compose_var(consumer["AUDITLOG_SERVER_SECRET"])
    assert {"AUDITLOG_JWT_AUDIENCE", "AUDITLOG_JWT_ISSUER", "AUDITLOG_API_FORWARDED_ALLOW_IPS"} <= set(api)
    example = _env_example()
    required = {m.group(1) for m in _INTERPOLATION.finditer(text) if m.group(2) == "?"}
    assert required <= set(example), f"deploy/.env.example lacks {sorted(required - set(example))}"

    def settings_of(env: dict[str, object], values: dict[str, str]) -> Settings:
        def interpolate(m: re.Match[str]) -> str:
            return values.get(m.group(1), m.group(3) if m.group(2) == "-" else "")

        for k in [k for k in os.environ if k.startswith("AUDITLOG_")]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, _INTERPOLATION.sub(interpolate, str(v)))
        return Settings()

    for env, refused in ((api, "AUDITLOG_JWT_SECRET|AUDITLOG_SERVER_SECRET"), (consumer, "AUDITLOG_SERVER_SECRET")):
        with pytest.raises(ValidationError, match=refused):
            settings_of(env, example)
    filled = {**example, "AUDITLOG_JWT_SECRET": "compose-test-jwt-" + "j" * 32,
              "AUDITLOG_SERVER_SECRET": "compose-test-server-" + "s" * 32}
    s_api, s_consumer = settings_of(api, filled), settings_of(consumer, filled)
    assert (s_api.jwt_audience, s_api.jwt_issuer) == (example["AUDITLOG_JWT_AUDIENCE"], example["AUDITLOG_JWT_ISSUER"])
    assert s_api.forwarded_allow_ips == [], "no proxy in this file: X-Forwarded-For must be ignored"
    assert s_api.server_secret is not None and s_consumer.server_secret is not None
    assert s_api.server_secret.get_secret_value() == s_consumer.server_secret.get_secret_value()
