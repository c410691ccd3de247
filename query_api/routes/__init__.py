"""The API's routes, one module per resource; :data:`auditlogkit.query_api.core.app.ROUTERS` lists their routers."""
