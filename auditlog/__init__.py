"""auditlog: the base shared by every part (settings, logs, ClickHouse access, Kafka connection, embedded broker,
signals, private files); it imports nothing else of ours. ``auditlogkit.server.db`` owns the database objects and
``auditlogkit.server.app`` is the application and its command line."""

__version__ = "0.1.0"
