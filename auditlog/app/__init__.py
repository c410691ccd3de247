"""The application: the ``auditlog`` command and its subcommands, the embedded all-in-one (``up``) and its demo
data. It puts the parts together, so it may import every package of ours; nothing imports it."""
