"""``salesmart ingest-landing``: load the new files of the landing location.

The landing location is ``data_lake.landing`` in the config file, or ``SALESMART_LANDING``:
a local folder (relative paths are taken from the working directory) or
``gs://bucket/prefix``. Every ``*.csv`` below it is a candidate, in name order; files and
folders whose names start with ``.`` or ``_`` (partial uploads, markers, ``_temporary/``)
are left alone. Writers should
write elsewhere and then move a finished file in.

A file is loaded into a warehouse unless that warehouse already holds a finished load of
the same content (its SHA-256 in ``raw.loads`` on PostgreSQL, in
``transactions_warehouse.loads`` on BigQuery). Content decides, not names: a run with
nothing new loads nothing, a renamed copy is not loaded twice, and a run that failed half
way (say, PostgreSQL loaded, BigQuery unreachable) is completed by the next one.

GCS objects are downloaded first (google-cloud-storage, credentials as for BigQuery) to
``<state_dir>/landing/gs/<bucket>/<object>``; a copy already there whose MD5 matches the
object's is reused. Loads, rejects and messages name the object (``gs://bucket/object``),
not its local copy. On a worker that keeps no state between runs every object is
downloaded again (and skipped by its hash): move loaded objects out of the prefix, or give
the prefix a lifecycle rule, to keep runs short.

A file that cannot be used (not CSV, missing columns, ...) does not stop the others: they
are loaded, and :class:`UnusableLandingFiles` is raised at the end naming the bad ones.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, NamedTuple

from common.config import ConfigError, Settings
from pipeline import TARGETS
from pipeline.csvsource import UnusableInputError, file_sha256
from pipeline.ingest import IngestResult

GCS_SCHEME = "gs://"
LANDING_SUFFIX = ".csv"


class UnusableLandingFiles(UnusableInputError):
    """Some landing files could not be used; every other file was loaded."""


class LandingFile(NamedTuple):
    """A landing file: its local copy, and the name loads and messages give it (the
    local path, or ``gs://bucket/object`` for a downloaded object)."""

    path: Path
    name: str


def _quiet(_: str) -> None:
    return None


def is_landing_file(name: str) -> bool:
    """Whether a file (or object) name is one to load: ``*.csv``, not hidden or a marker."""
    base = PurePosixPath(name).name
    return base.lower().endswith(LANDING_SUFFIX) and not base.startswith((".", "_"))


def _in_hidden_folder(relative: PurePath) -> bool:
    """Whether a path below the landing location passes through a ``.``/``_`` folder
    (``_temporary/`` of a Spark or Hadoop job still writing, ``.staging/``): left alone."""
    return any(part.startswith((".", "_")) for part in relative.parent.parts)


def local_files(folder: Path) -> list[Path]:
    """The landing files below a local folder, in name order."""
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(
            f"landing folder {folder} {state} (set SALESMART_LANDING or data_lake.landing)"
        )
    found = [
        path
        for path in folder.rglob("*")
        if path.is_file()
        and is_landing_file(path.name)
        and not _in_hidden_folder(path.relative_to(folder))
    ]
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/prefix`` -> ``(bucket, prefix)``."""
    bucket, _, prefix = uri[len(GCS_SCHEME) :].partition("/")
    if not uri.startswith(GCS_SCHEME) or not bucket:
        raise ConfigError(f"landing location {uri!r} is not gs://bucket/prefix")
    return bucket, prefix


def _below_prefix(name: str, prefix: str) -> PurePosixPath:
    """An object's path below the folder the landing prefix names.

    ``gs://b/_in`` and ``gs://b/_in/`` both name the folder ``_in/``: only folders below
    it can hide objects. A prefix that is not a whole folder name (``gs://b/in`` also
    lists ``in.csv`` and ``in2/…``) counts from the folder it is in.
    """
    named = prefix.rstrip("/")
    if named and name.startswith(named + "/"):
        return PurePosixPath(name[len(named) + 1 :])
    return PurePosixPath(name[len(prefix.rpartition("/")[0]) :].lstrip("/"))


def _md5_base64(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode("ascii")


def gcs_files(uri: str, cache: Path, settings: Settings, client: Any = None) -> list[LandingFile]:
    """Download the landing objects under ``uri`` into ``cache``; their local copies.

    ``client`` is a ``google.cloud.storage.Client`` (one is made from the settings when
    None). Object names that would leave the cache folder are refused.
    """
    bucket, prefix = parse_gcs_uri(uri)
    if client is None:
        from google.cloud.storage import Client

        client = Client(project=settings.bigquery.project)
    root = (cache / "gs" / bucket).resolve()
    files: list[LandingFile] = []
    for blob in sorted(client.list_blobs(bucket, prefix=prefix or None), key=lambda b: b.name):
        name = str(blob.name)
        if name.endswith("/") or not is_landing_file(name):
            continue
        local = (root / name).resolve()
        if not local.is_relative_to(root) or ".." in PurePosixPath(name).parts:
            raise ConfigError(f"landing object gs://{bucket}/{name} has an unsafe name")
        if _in_hidden_folder(_below_prefix(name, prefix)):
            continue
        md5 = getattr(blob, "md5_hash", None)
        if not (md5 and local.is_file() and _md5_base64(local) == md5):
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(local.name + ".part")
            blob.download_to_filename(str(partial))  # the client verifies the checksum
            partial.replace(local)
        files.append(LandingFile(local, f"{GCS_SCHEME}{bucket}/{name}"))
    return files


def landing_files(settings: Settings, client: Any = None) -> list[LandingFile]:
    """The files of the landing location, local (GCS objects downloaded first)."""
    location = settings.landing.strip()
    if not location:
        raise ConfigError("no landing location: set SALESMART_LANDING or data_lake.landing")
    if location.startswith(GCS_SCHEME):
        return gcs_files(location, settings.state_dir.resolve() / "landing", settings, client)
    return [LandingFile(path, str(path)) for path in local_files(Path(location))]


def ingest_if_new(
    path: Path,
    digest: str,
    target: str,
    settings: Settings,
    *,
    progress: bool = False,
    source_name: str | None = None,
) -> IngestResult | None:
    """Load ``path`` into ``target`` unless that warehouse holds a finished load of the same
    content (SHA-256 ``digest``): then None. Each warehouse answers for itself, as a run
    may have been stopped between the two loads. For BigQuery, ``ensure_warehouse_tables``
    must have run (its loads table answers). ``source_name`` names the file in the load
    (default: ``path``)."""
    from pipeline.ingest import ingest_into, loaded_before

    if loaded_before(target, digest, settings):
        return None
    return ingest_into(
        target, path, settings, progress=progress, source_name=source_name, digest=digest
    )


def ingest_files(
    files: Iterable[LandingFile],
    settings: Settings,
    targets: Sequence[str],
    *,
    say: Callable[[str], None] = _quiet,
) -> list[IngestResult]:
    """Load each file not yet in each target; the results of the loads made."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ConfigError(f"unknown target {unknown[0]!r}; expected postgres or bigquery")
    if "postgres" in targets and not settings.database_url:
        raise ConfigError("no PostgreSQL: set SALESMART_DATABASE_URL or run 'salesmart up'")
    if "bigquery" in targets:
        from pipeline.ingest_bigquery import ensure_warehouse_tables

        ensure_warehouse_tables(settings)  # the loads table answers "already loaded?"
    results: list[IngestResult] = []
    unusable: list[str] = []
    for path, name in files:
        done: list[str] = []  # the targets this file reached before it became unusable
        try:
            digest = file_sha256(path)
            for target in targets:
                result = ingest_if_new(path, digest, target, settings, source_name=name)
                done.append(target)
                if result is None:
                    say(f"{name} -> {target}: already loaded (sha256 {digest[:12]}), skipped")
                else:
                    say(result.summary())
                    if not result.already_loaded:  # loaded meanwhile by a run beside this one
                        results.append(result)
        except UnusableInputError as exc:
            # The reader names the local copy; say which landing file it is.
            reason = str(exc).removeprefix(f"{path}: ")
            # It may have changed or gone away after its first warehouse had loaded it.
            where = f" into {', '.join(t for t in targets if t not in done)}" if done else ""
            unusable.append(f"{name}: {reason}")
            say(f"{name}: unusable, not loaded{where}: {reason}")
    if unusable:
        raise UnusableLandingFiles(
            f"{len(unusable)} landing file(s) unusable, the others were loaded: "
            + "; ".join(unusable)
        )
    return results


def ingest_landing(
    settings: Settings,
    targets: Sequence[str] = TARGETS,
    *,
    say: Callable[[str], None] = _quiet,
    client: Any = None,
) -> list[IngestResult]:
    """Load every new file of the landing location into ``targets``; the loads made.

    ``settings.database_url`` must name the PostgreSQL to load into when ``postgres`` is a
    target; ``say`` gets one line per file and target (loaded, or skipped and why).
    """
    files = landing_files(settings, client)
    say(f"landing {settings.landing}: {len(files)} file(s)")
    return ingest_files(files, settings, targets, say=say)
