"""The ``salesmart`` command: ingest, transform, the local run, users, generate."""

#: The two warehouses a command loads, builds or checks; ``all`` on the command line is both.
TARGETS = ("postgres", "bigquery")


def expand_targets(choice: str) -> tuple[str, ...]:
    """``all`` -> both targets, in ``TARGETS`` order; a single target -> itself."""
    if choice == "all":
        return TARGETS
    if choice not in TARGETS:
        raise ValueError(f"unknown target {choice!r}; expected postgres, bigquery or all")
    return (choice,)
