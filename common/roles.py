"""The roles an account may have, apart from ``common.auth`` so that the CLI's parser can
name them without importing the configuration (``salesmart --help`` stays fast)."""

# auth.users' CHECK constraint (pipeline/migrations/0002_auth.sql) holds the same list: a new
# role takes a migration too.
ROLES = ("analyst", "admin")
