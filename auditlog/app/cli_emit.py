"""``auditlog emit``: validate audit events from JSON/NDJSON or flags and publish them."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from auditlogkit.server import logs
from auditlogkit.server.app.compose import Composition
from auditlogkit.server.settings import Settings

#: The flags that build one event (without FILE), and the field each sets.
_EVENT_FLAGS = {
    "org": "org_id: the tenant (required)",
    "workspace": "workspace_id: the workspace inside the org (optional)",
    "scope": "scope of the action in the catalog (`auditlog catalog`), e.g. service",
    "category": "category of the action in the catalog, e.g. compute",
    "action": "action: <object>.<verb> from the catalog, e.g. vm.delete",
    "status": "status: SUCCESS or FAILED",
    "actor-id": "actor.id: who did it (user or service id)",
    "actor-email": "actor.email (optional)",
    "actor-type": "actor.type: user, service or system",
    "ip": "actor.ip: the caller's address (optional)",
    "user-agent": "actor.user_agent (optional)",
    "target-type": "target.type: the kind of resource acted on, e.g. vm",
    "target-id": "target.id: the resource's id",
    "target-name": "target.name: a readable name (optional)",
    "description": "description: one readable sentence of what happened",
    "source": "source: the emitting service's name",
    "request-id": "request_id: correlates the event with the service's logs (optional)",
    "occurred-at": "occurred_at: RFC 3339 time of the action [now]",
    "event-id": "event_id: a UUID; sending the same one twice stores one event [a new UUID]",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    emit = sub.add_parser(
        "emit",
        help="publish audit events from JSON/NDJSON (file or stdin) or from flags",
        description="Validate and publish events. Input: a JSON object, a JSON array or NDJSON, from FILE or "
        "stdin ('-'); or one event built from flags. Every event is validated first; if any is invalid nothing "
        "is sent (unless --skip-invalid) and the reasons are printed with their line numbers.",
    )
    emit.add_argument("file", nargs="?", help="JSON/NDJSON file, or '-' for stdin")
    emit.add_argument("--bootstrap", default=None, help="Kafka bootstrap [AUDITLOG_KAFKA_BOOTSTRAP]")
    emit.add_argument("--topic", default=None, help="topic [AUDITLOG_TOPIC]")
    emit.add_argument("--skip-invalid", action="store_true", help="send the valid events even if some are invalid")
    for flag, what in _EVENT_FLAGS.items():
        emit.add_argument(f"--{flag}", default=None, help=what)
    emit.add_argument("--detail", default=None, help="detail as a JSON object")
    emit.set_defaults(func=cmd_emit)


def _read_events(args: argparse.Namespace) -> Iterator[tuple[int, Any]]:
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        stripped = text.strip()
        if stripped.startswith("["):
            yield from enumerate(json.loads(stripped), start=1)
            return
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield n, line
        return
    ev: dict[str, Any] = {}
    simple = {"org": "org_id", "workspace": "workspace_id", "scope": "scope", "category": "category",
              "action": "action", "status": "status", "description": "description", "source": "source",
              "request_id": "request_id", "occurred_at": "occurred_at", "event_id": "event_id"}
    for flag, key in simple.items():
        if getattr(args, flag) is not None:
            ev[key] = getattr(args, flag)
    actor = {k: getattr(args, f"actor_{k}") for k in ("id", "email", "type") if getattr(args, f"actor_{k}")}
    if args.ip:
        actor["ip"] = args.ip
    if args.user_agent:
        actor["user_agent"] = args.user_agent
    actor.setdefault("type", "user")
    ev["actor"] = actor
    target = {k: getattr(args, f"target_{k}") for k in ("type", "id", "name") if getattr(args, f"target_{k}")}
    if target:
        ev["target"] = target
    if args.detail:
        ev["detail"] = json.loads(args.detail)
    from auditlogkit.schemas.event import Status

    ev.setdefault("status", Status.SUCCESS.value)
    if ev.get("action") and "category" not in ev:
        ev["category"] = ev["action"].split(".", 1)[0]
    yield 1, ev


def cmd_emit(args: argparse.Namespace) -> int:
    from auditlogkit.producer import InvalidEvent, coerce_event

    settings = Settings()
    logs.configure("warning")
    parts = Composition(settings, bootstrap=args.bootstrap)
    catalog = parts.catalog
    good, bad = [], 0
    try:
        items = list(_read_events(args))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read events: {exc}", file=sys.stderr)
        return 2
    for n, item in items:
        try:
            data = json.loads(item) if isinstance(item, str) else item
            if not isinstance(data, dict):
                raise InvalidEvent("event", "must be a JSON object")
            good.append(coerce_event(data, catalog))
        except json.JSONDecodeError as exc:
            bad += 1
            print(f"line {n}: not valid JSON: {exc.msg}", file=sys.stderr)
        except InvalidEvent as exc:
            bad += 1
            print(f"line {n}: invalid {exc.field}: {exc.reason}", file=sys.stderr)
    if bad and not args.skip_invalid:
        print(f"{bad} invalid event(s); nothing sent (use --skip-invalid to send the {len(good)} valid ones)",
              file=sys.stderr)
        return 1
    bootstrap = str(parts.kafka)
    topic = args.topic or settings.topic

    async def send() -> int:
        async with parts.ingest_producer(topic=topic, request_timeout_ms=15000) as p:
            return await p.send_many(good)

    try:
        sent = asyncio.run(send())
    except Exception as exc:
        print(f"error: could not publish to {bootstrap}: {exc}", file=sys.stderr)
        return 3
    for ev in good if len(good) <= 20 else []:
        print(f"sent {ev.event_id} {ev.org_id} {ev.scope}/{ev.action} {ev.status}")
    print(f"{sent} event(s) published to {topic} on {bootstrap}" + (f"; {bad} invalid skipped" if bad else ""))
    return 1 if bad else 0
