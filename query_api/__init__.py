"""The read API: FastAPI app (:func:`query_api.app.create_app`), JWT auth, tenant scoping, export, CLI."""
