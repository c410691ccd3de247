"""Log streams: each organization's stored events, delivered at least once and in the store's order to its own
systems (webhook, Splunk HEC, Datadog, S3), with ``event_id`` to de-duplicate.

- :mod:`~auditlogkit.query_api.streams.store`: the streams' configuration, positions and leases in the store (the repository
  the HTTP API calls), with :mod:`~auditlogkit.query_api.streams.config` (validation) and :mod:`~auditlogkit.query_api.streams.keys`
  (the encryption of destinations' secrets);
- :mod:`~auditlogkit.query_api.streams.reader`: a stream's next batch, with the live tail's positions and an org owner's scope;
- :mod:`~auditlogkit.query_api.streams.deliverer`: the runner of ``auditlog stream`` and ``auditlog up``;
- :mod:`~auditlogkit.query_api.streams.destinations`: one module per destination type;
- :mod:`~auditlogkit.query_api.streams.ssrf`: where a destination may send to.
"""
