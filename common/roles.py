"""The roles an account may have, apart from ``common.auth`` so that the CLI's parser can
name them without importing the configuration (``salesmart --help`` stays fast)."""

ROLES = ("analyst", "admin")
