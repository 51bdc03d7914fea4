"""The four functions and the path each serves its contract's operation at (its root, ``/``,
answers the same: each is its own URL, a Knative Service). Standard library only: the CLI,
the functions and their OpenAPI documents all read it."""

#: In port order (``up`` and ``serve``: base, base+1, ...).
FUNCTION_PATHS = {
    "token": "/token",  # nosec B105 - a URL path, not a password
    "trends_bq": "/sales/trends",
    "trends_pg": "/sales/pg-trends",
    "dashboard": "/",
}
FUNCTIONS = tuple(FUNCTION_PATHS)
