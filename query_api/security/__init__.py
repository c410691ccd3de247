"""Who may read what: token verification, principals, tenant scoping, rate limits and slots, security headers, the
self-audit of every read and the client IP it records."""
