"""The owner of the database objects: migrations (and their SQL rendering for a cluster), roles and grants, the
content hash and the integrity verifier. Imports only the base (``auditlog``) and ``schemas``."""
