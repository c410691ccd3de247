"""The read API: FastAPI app (:func:`auditlogkit.query_api.core.app.create_app`), JWT auth, tenant scoping, export, CLI.

Folders by role: ``routes/`` (one module per resource), ``read/`` (all SQL), ``security/`` (auth, scoping, limits,
self-audit), ``core/`` (app factory, query runner, errors, serving); ``models.py`` (every response model) and
``deps.py`` (the FastAPI dependencies: the one reader of ``app.state``)."""
