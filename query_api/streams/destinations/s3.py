"""``s3``: one gzip NDJSON object per batch in the owner's bucket (AWS S3 or any S3-compatible store), via obstore.

Contract:
- the object is ``<prefix>/org_id=<org>/date=<YYYY-MM-DD>/<first>-<last>.ndjson.gz`` (:func:`object_key`): the date
  is the day (UTC) the batch's first event was stored, ``<first>`` and ``<last>`` the ``<partition>.<offset>`` of
  its first and last event (a test send: ``test-<id>``); the body is the events as the list returns them, one a
  line, gzip with no time in its header, so a retried batch is the same object byte for byte;
- it is written once: a create-only PUT (``If-None-Match: *``); an object already there under that key is a
  retried batch that had been stored, so it counts as delivered;
- the client uses the stream's credentials only (never the environment's: a credential provider, the endpoint set
  explicitly), no retries of its own (the deliverer retries), the stream's timeout, no multipart. The endpoint
  (default ``https://<bucket>.s3.<region>.amazonaws.com``) passes :func:`auditlogkit.query_api.streams.ssrf.resolve` before each
  write; obstore connects by itself, so the address is checked, not pinned;
- replies: 401/403 and a missing bucket are refusals; a timeout, a refused connection and 5xx are retryable.
"""

from __future__ import annotations

import gzip
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from auditlogkit.query_api.streams.destinations.base import Context, Field, Outcome, delivered, failed, refused
from auditlogkit.query_api.streams.destinations.webhook import ndjson
from auditlogkit.query_api.streams.ssrf import SsrfError, resolve

TYPE = "s3"
FIELDS = (Field("bucket", max_chars=63, pattern=r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"),
          Field("prefix", required=False, max_chars=512),
          Field("region", max_chars=64, pattern=r"[a-z0-9-]+"), Field("access_key_id", secret=True, max_chars=128),
          Field("secret_access_key", secret=True, max_chars=256), Field("endpoint", required=False, url=True))
_STATUS = re.compile(r"status code: (\d{3})")


def endpoint(fields: dict[str, str] | Any) -> str:
    """The S3 endpoint URL: the configured one (path-style requests), else the bucket's at AWS for the region
    (virtual-hosted style)."""
    if fields.get("endpoint"):
        return str(fields["endpoint"]).rstrip("/")
    return f"https://{fields['bucket']}.s3.{fields['region']}.amazonaws.com"


def object_key(ctx: Context) -> str:
    """The object's key (module contract)."""
    day = (ctx.received_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d")
    prefix = (ctx.fields.get("prefix") or "").strip("/")
    name = f"{ctx.first[0]}.{ctx.first[1]}-{ctx.last[0]}.{ctx.last[1]}.ndjson.gz"
    if ctx.test:
        name = f"test-{ctx.batch_id}.ndjson.gz"
    path = f"org_id={quote(ctx.org_id, safe='')}/date={day}/{name}"
    return f"{prefix}/{path}" if prefix else path


def gz(batch: list[dict[str, Any]]) -> bytes:
    return gzip.compress(ndjson(batch), mtime=0)


def _store(ctx: Context, url: str) -> Any:
    from obstore.store import S3Store

    key_id, secret = ctx.secrets["access_key_id"], ctx.secrets["secret_access_key"]

    def credentials() -> Any:
        return {"access_key_id": key_id, "secret_access_key": secret, "token": None, "expires_at": None}

    return S3Store(ctx.fields["bucket"], endpoint=url, aws_endpoint_url_s3=url, region=ctx.fields["region"],
                   virtual_hosted_style_request=not ctx.fields.get("endpoint"), skip_signature=False,
                   credential_provider=credentials,
                   client_options={"allow_http": url.startswith("http://"), "timeout": f"{ctx.timeout:g}s",
                                   "connect_timeout": f"{min(ctx.timeout, 5.0):g}s"},
                   retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=ctx.timeout)})


def _failure(exc: Exception, ctx: Context) -> Outcome:
    from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError

    text = ctx.scrub(str(exc).split("\n", 1)[0])
    m = _STATUS.search(str(exc))
    status = int(m.group(1)) if m else None
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError | NotFoundError):
        return refused(text, status)
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return refused(text, status)
    return failed(text, status)


async def send(batch: list[dict[str, Any]], ctx: Context) -> Outcome:
    import obstore
    from obstore.exceptions import AlreadyExistsError

    url = endpoint(ctx.fields)
    try:
        await resolve(url, ctx.allow, ctx.resolver)
    except SsrfError as exc:
        return refused(str(exc))
    key = object_key(ctx)
    try:
        await obstore.put_async(_store(ctx, url), key, gz(batch), mode="create", use_multipart=False)
    except AlreadyExistsError:
        return delivered(message=f"s3://{ctx.fields['bucket']}/{key} was already written")
    except Exception as exc:
        return _failure(exc, ctx)
    return delivered(200, f"s3://{ctx.fields['bucket']}/{key}")
