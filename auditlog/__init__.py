"""auditlog: the glue shared by the four parts (settings, logs, ClickHouse access, embedded broker, CLI)."""

__version__ = "0.1.0"
