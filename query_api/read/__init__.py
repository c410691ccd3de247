"""Every read of the store for the API: the SQL of the event list and detail, the export, actors, stats, the live
tail and the integrity check, with the filter table and the event shape they are built from. Each read takes a
:class:`~auditlogkit.query_api.security.scoping.ScopedQuery` (or the caller's own org)."""
