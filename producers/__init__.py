"""The producer SDK: validate audit events before they leave the service and publish them (Kafka or HTTP).

``from producers import AuditProducer, AuditEvent`` is the whole import for a service; :mod:`producers.context`
and :mod:`producers.middleware` carry the request's actor, address and request id into every event;
:mod:`producers.testing` is an in-memory producer for a service's tests.
"""

from producers.context import AuditContext, audit_context, bind
from producers.errors import DeliveryFailed, InvalidEvent
from producers.producer import AuditProducer, AuditProducerSync
from schemas.event import Actor, AuditEvent, Target

__all__ = ["Actor", "AuditContext", "AuditEvent", "AuditProducer", "AuditProducerSync", "DeliveryFailed",
           "InvalidEvent", "Target", "audit_context", "bind"]
