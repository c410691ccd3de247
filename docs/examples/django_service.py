"""A Django service (one file) that records who deleted which VM (docs/sdk.md). Run:
AUDITLOG_KAFKA_BOOTSTRAP=... (or AUDITLOG_INGEST_URL + AUDITLOG_INGEST_TOKEN) python django_service.py 8080"""

import sys

from django.conf import settings

settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="example-only",
                   LOGGING={"version": 1, "handlers": {"stderr": {"class": "logging.StreamHandler"}},
                            "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}}})

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings.configure)
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from auditlogkit import AuditProducerSync, bind  # noqa: E402
from auditlogkit.middleware import AuditContextWSGIMiddleware  # noqa: E402

audit = AuditProducerSync.from_env()  # a background thread; flushed at exit (bounded wait)


def delete_vm(request: HttpRequest, vm_id: str) -> JsonResponse:
    bind(org_id=request.headers["X-Org-Id"], actor_id=request.headers["X-User-Id"], actor_type="user")
    # ... delete the VM ...
    audit.send_and_wait(action="vm.delete", target={"type": "vm", "id": vm_id})
    return JsonResponse({"deleted": vm_id})


urlpatterns = [path("vms/<str:vm_id>/delete", delete_vm)]
application = AuditContextWSGIMiddleware(get_wsgi_application())

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    make_server("127.0.0.1", int(sys.argv[1]), application).serve_forever()
