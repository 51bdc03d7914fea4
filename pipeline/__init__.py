"""The ``salesmart`` command: ingest, transform, the local run, users, generate."""

#: The four functions, in port order (``up`` and ``serve``: base, base+1, ...), and the
#: path each serves its contract's operation at.
FUNCTION_PATHS = {
    "token": "/token",  # nosec B105 - a URL path, not a password
    "trends_bq": "/sales/trends",
    "trends_pg": "/sales/pg-trends",
    "dashboard": "/",
}
FUNCTIONS = tuple(FUNCTION_PATHS)
