"""``auditlog token``: mint an HS256 API token for a development setup (:func:`auditlogkit.query_api.security.auth.mint_token`).

- ``--service --write-org ORG [--write-org ORG | --write-org '*'] [--sub svc-billing]``: a service token for
  ``POST /v1/ingest`` (``role: service``, ``audit:write``, ``write_orgs``); it cannot read;
- otherwise a read token: ``--org ORG [--role org_owner|workspace_admin] [--workspace W ...] [--permission P ...]
  [--sub] [--email] [--streams]`` (permissions default to ``audit:read`` and ``audit:export``; ``--streams`` adds
  ``audit:stream`` for an org owner: managing the org's log streams);
- ``--ttl SECONDS`` (default 3600). The key is ``AUDITLOG_JWT_SECRET``, else the secret ``auditlog up`` generated in
  the data directory (``--data``); without either: exit 2 (a weak one stops it like every command: invalid settings).
  ``aud`` / ``iss`` are ``AUDITLOG_JWT_AUDIENCE`` / ``AUDITLOG_JWT_ISSUER`` when set (a server configured with them
  refuses tokens without). The token alone goes to stdout
  (``TOKEN=$(auditlog token ...)``), its claims to stderr. Production tokens come from the identity provider.
"""

from __future__ import annotations

import argparse
import sys

from auditlogkit.server.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("token", help="mint a development API token (service token for POST /v1/ingest, or read token)",
                       description="Mint an HS256 token signed with AUDITLOG_JWT_SECRET (or the secret `auditlog up` "
                       "generated in --data). Prints the token only.")
    t.add_argument("--service", action="store_true", help="a service token: may write events (POST /v1/ingest), "
                   "not read them")
    t.add_argument("--write-org", action="append", default=None, metavar="ORG",
                   help="with --service: an org_id it may write for (repeatable; '*' = any org)")
    t.add_argument("--org", help="read token: the caller's org_id")
    t.add_argument("--role", choices=("org_owner", "workspace_admin"), default="org_owner", help="read token: role")
    t.add_argument("--workspace", action="append", default=None, help="read token: a workspace of a workspace_admin "
                   "(repeatable)")
    t.add_argument("--permission", action="append", default=None, metavar="PERM",
                   help="permissions (repeatable) [service: audit:write; read: audit:read, audit:export]")
    t.add_argument("--streams", action="store_true", help="read token of an org owner: also audit:stream (may "
                   "manage the org's log streams)")
    t.add_argument("--sub", default=None, help="subject [service: svc-dev; read: u-dev]")
    t.add_argument("--email", default=None, help="read token: the caller's e-mail")
    t.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds [3600]")
    t.add_argument("--data", default=None, help="data directory of `auditlog up` [AUDITLOG_DATA_DIR, ./.auditlog]")
    t.set_defaults(func=cmd_token)


def _secret(settings: Settings) -> str | None:
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.data_dir / "jwt-secret"  # what `auditlog up` generates when AUDITLOG_JWT_SECRET is unset
    return (path.read_text().strip() or None) if path.is_file() else None


def cmd_token(args: argparse.Namespace) -> int:
    from auditlogkit.query_api.security.auth import mint_token
    from auditlogkit.query_api.security.principal import EXPORT, READ, SERVICE_ROLE, STREAM

    settings = Settings().with_overrides(data=args.data)
    secret = _secret(settings)
    if not secret:
        print(f"auditlog token: set AUDITLOG_JWT_SECRET (or run `auditlog up` with --data {settings.data_dir} first)",
              file=sys.stderr)
        return 2
    if args.ttl <= 0:
        print("auditlog token: --ttl must be positive", file=sys.stderr)
        return 2
    perms = tuple(args.permission) if args.permission else None
    aud, iss = settings.jwt_audience, settings.jwt_issuer
    if args.service:
        if not args.write_org or args.org or args.workspace:
            print("auditlog token: --service needs --write-org (and takes no --org/--workspace)", file=sys.stderr)
            return 2
        sub = args.sub or "svc-dev"
        tok = mint_token(secret, sub=sub, role=SERVICE_ROLE, write_orgs=args.write_org, permissions=perms,
                         ttl_seconds=args.ttl, audience=aud, issuer=iss)
        print(f"service token: sub={sub} write_orgs={','.join(args.write_org)} ttl={args.ttl}s", file=sys.stderr)
    else:
        if not args.org or args.write_org:
            print("auditlog token: a read token needs --org (--write-org goes with --service)", file=sys.stderr)
            return 2
        if args.streams:
            if args.role != "org_owner":
                print("auditlog token: --streams is for an org_owner (log streams carry the whole org's events)",
                      file=sys.stderr)
                return 2
            perms = (*(perms or (READ, EXPORT)), STREAM)
        sub = args.sub or "u-dev"
        tok = mint_token(secret, sub=sub, role=args.role, email=args.email or "", org_id=args.org,
                         workspaces=args.workspace, permissions=perms, ttl_seconds=args.ttl,
                         audience=aud, issuer=iss)
        print(f"read token: sub={sub} org_id={args.org} role={args.role} ttl={args.ttl}s", file=sys.stderr)
    print(tok)
    return 0
