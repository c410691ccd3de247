"""The producer SDK: validate audit events before they leave the service and publish them (Kafka or HTTP).

``from producers import AuditProducer, AuditEvent`` is the whole import for a service; :mod:`auditlogkit.context`
and :mod:`auditlogkit.middleware` carry the request's actor, address and request id into every event;
:mod:`auditlogkit.testing` is an in-memory producer for a service's tests.
"""

from auditlogkit.context import AuditContext, audit_context, bind
from auditlogkit.errors import DeliveryFailed, InvalidEvent
from auditlogkit.producer import AuditProducer, AuditProducerSync
from auditlogkit.schemas.event import Actor, AuditEvent, Target

__all__ = ["Actor", "AuditContext", "AuditEvent", "AuditProducer", "AuditProducerSync", "DeliveryFailed",
           "InvalidEvent", "Target", "audit_context", "bind"]
