"""The API's machinery: the app factory (:func:`auditlogkit.query_api.core.app.create_app`), the query runner, the JSON errors,
the server, metrics and access logs, streamed responses, HTTP ingest's body handling and the page's generated
filter list."""
