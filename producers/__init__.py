"""The producer SDK: validate audit events before they leave the service and publish them to Kafka."""

from producers.producer import AuditProducer, AuditProducerSync, InvalidEvent

__all__ = ["AuditProducer", "AuditProducerSync", "InvalidEvent"]
