"""A FastAPI service that records who deleted which VM (docs/sdk.md). Run: AUDITLOG_KAFKA_BOOTSTRAP=... (or
AUDITLOG_INGEST_URL + AUDITLOG_INGEST_TOKEN) AUDITLOG_SOURCE=vm-service uvicorn fastapi_service:app"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header

from auditlogkit import AuditProducer, bind
from auditlogkit.middleware import AuditContextMiddleware

audit = AuditProducer.from_env()  # Kafka or HTTP, as AUDITLOG_* says


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with audit:  # started with the app; what is queued is delivered before it stops
        yield


app = FastAPI(lifespan=lifespan)
app.add_middleware(AuditContextMiddleware)  # each request's address, user agent and request id


async def current_user(x_user_id: Annotated[str, Header()], x_org_id: Annotated[str, Header()]) -> str:
    """Stands in for the service's real authentication: it names the actor and tenant once. (``async``: a plain
    ``def`` dependency runs in a worker thread, and what it binds would not reach the endpoint.)"""
    bind(org_id=x_org_id, actor_id=x_user_id, actor_type="user")
    return x_user_id


@app.delete("/vms/{vm_id}")
async def delete_vm(vm_id: str, user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
    # ... delete the VM ...
    await audit.send_and_wait(action="vm.delete", target={"type": "vm", "id": vm_id, "name": f"vm {vm_id}"},
                              detail={"reason": "requested by the owner"})
    return {"deleted": vm_id}
