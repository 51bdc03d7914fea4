"""Render the Helm chart offline into plain manifests for ``kubectl apply`` users.

    python -m pipeline.render_manifests              # rewrite k8s/knative/ from default values
    python -m pipeline.render_manifests --check      # exit 1 when k8s/knative/ is stale
    python -m pipeline.render_manifests -f tuned.yaml --set functions.token.autoscaling.maxScale=3 \
        --out /tmp/manifests                         # render with overrides, like helm template

Values are layered as Helm's CLI does: the chart's defaults, then each ``-f`` file in order, then
``--set``/``--set-string``/``--set-file`` (later wins; maps merge; ``null`` removes a default).
The chart can only read files inside itself, so the pipeline configuration
(``data/pipeline_config.yaml``) is copied to ``helm/salesmart/files/`` on each write.
``metadata.namespace`` is left out of the written files so ``kubectl apply -n NS`` works.
Needs the ``dev`` extra (helm-python-sdk); no helm binary and no cluster.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = REPO_ROOT / "helm" / "salesmart"
MANIFEST_DIR = REPO_ROOT / "k8s" / "knative"
CONFIG_SOURCE = REPO_ROOT / "data" / "pipeline_config.yaml"
CONFIG_COPY = CHART_DIR / "files" / "pipeline_config.yaml"
RELEASE_NAME = "salesmart"
RENDER_NAMESPACE = "default"

#: How every file this module writes begins (either header): only those are its to replace
#: or remove; anything else in the folder is the operator's.
RENDERED_MARK = "# Rendered from helm/salesmart "
HEADER = (
    f"{RENDERED_MARK}(default values) by `python -m pipeline.render_manifests`.\n"
    "# Do not edit: change the chart and run it again (a test keeps both in sync).\n"
    "# Apply: kubectl apply -n NAMESPACE -f k8s/knative/  (secrets first: see helm/README.md)\n"
)


# The values under ``secrets`` that name things rather than hold a secret.
NAMING_SECRET_VALUES = ("secrets.existingSecret", "secrets.rotation", "secrets.keys.")


def shown_set(expression: str, *, as_strings: bool = False) -> str:
    """A ``--set`` (``--set-string``: ``as_strings``) expression as the files' header
    records it: the settings Helm reads from it, those under ``secrets`` hidden but for
    names, so the rendered Services and ConfigMaps can be kept where the Secrets may not.
    Read by Helm's own parser (an escaped comma, a ``{a,b}`` list), not split by hand."""
    import helm_python as helm

    parse = helm.parse_set_string_values if as_strings else helm.parse_set_string
    shown = []
    for path, value in _settings(parse(expression)):
        hidden = path.startswith("secrets.") and not path.startswith(NAMING_SECRET_VALUES)
        shown.append(f"{path}={'<hidden>' if hidden else _set_text(value)}")
    return ",".join(shown)


def _settings(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted path, value)`` of each setting of a parsed ``--set``."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _settings(value, path + ".")
        elif isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _settings(item, f"{path}[{index}].")
                else:
                    yield f"{path}[{index}]", item
        else:
            yield path, value


def _set_text(value: Any) -> str:
    """A value as ``--set`` writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "{" + ",".join(_set_text(item) for item in value) + "}"
    if isinstance(value, Mapping):
        return "{}"
    return str(value).replace("\\", "\\\\").replace(",", "\\,")


def overrides_header(options: Sequence[str]) -> str:
    """The header of files rendered with values other than the defaults: which ones."""
    return (
        f"{RENDERED_MARK}with {' '.join(options)}\n"
        "# by `python -m pipeline.render_manifests`. Do not edit: render them again.\n"
        "# Apply: kubectl apply -n NAMESPACE -f DIR/  (secrets first: see helm/README.md)\n"
    )


class RenderError(RuntimeError):
    """The chart could not be rendered with the given values; the message says why."""


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into ``base`` as Helm merges ``-f`` files and ``--set``: maps merge
    recursively, anything else (lists included) is replaced by the later value."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_values(current, value)
        else:
            merged[key] = value
    return merged


def user_values(
    values_files: Iterable[Path] = (),
    set_values: Iterable[str] = (),
    set_string_values: Iterable[str] = (),
    set_file_values: Iterable[str] = (),
) -> dict[str, Any]:
    """The user-supplied values of ``-f`` files and ``--set*`` flags, layered in Helm's order."""
    import helm_python as helm

    layers: list[dict[str, Any]] = []
    try:
        for path in values_files:
            layers.append(helm.values_from_yaml(Path(path).read_text(encoding="utf-8")))
        layers += [helm.parse_set_string(expr) for expr in set_values]
        layers += [helm.parse_set_string_values(expr) for expr in set_string_values]
        layers += [helm.parse_set_file(expr) for expr in set_file_values]
    except helm.HelmError as exc:
        raise RenderError(str(exc).strip()) from None
    values: dict[str, Any] = {}
    for layer in layers:
        values = merge_values(values, layer)
    return values


def render_chart(
    values: Mapping[str, Any] | None = None,
    *,
    chart_dir: Path = CHART_DIR,
    release: str = RELEASE_NAME,
    namespace: str = RENDER_NAMESPACE,
) -> list[dict[str, Any]]:
    """Render the chart like ``helm template`` (schema validated, hooks included) and return
    its objects in template order. NOTES.txt is not an object and is left out."""
    documents = render_documents(values, chart_dir=chart_dir, release=release, namespace=namespace)
    return [document.object for document in documents]


class Document(NamedTuple):
    """One rendered object, and its text as the chart wrote it (its comments kept)."""

    object: dict[str, Any]
    text: str


def render_documents(
    values: Mapping[str, Any] | None = None,
    *,
    chart_dir: Path = CHART_DIR,
    release: str = RELEASE_NAME,
    namespace: str = RENDER_NAMESPACE,
) -> list[Document]:
    """``render_chart``'s objects with their text."""
    import helm_python as helm

    helm.validate_release_name(release)
    try:
        with helm.Chart.load(chart_dir) as chart:
            rendered = chart.render(
                dict(values or {}), name=release, namespace=namespace, is_install=True
            )
    except helm.HelmError as exc:
        raise RenderError(str(exc).strip()) from None
    documents: list[Document] = []
    for template in sorted(rendered):
        if not template.endswith((".yaml", ".yml")):
            continue
        for text in _DOCUMENT_SEPARATOR.split(rendered[template]):
            document = yaml.safe_load(text)
            if document:
                documents.append(Document(document, text.strip("\n") + "\n"))
    return documents


_DOCUMENT_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
#: ``metadata.namespace`` of a rendered object: at the top level's first indentation.
_NAMESPACE_LINE = re.compile(r"^(metadata:\n(?:  .*\n)*?)  namespace: .*\n", re.MULTILINE)


def render_notes(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE_NAME,
    namespace: str = RENDER_NAMESPACE,
) -> str:
    """The text Helm prints after an install (templates/NOTES.txt)."""
    import helm_python as helm

    with helm.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(dict(values or {}), name=release, namespace=namespace)
    return next((text for name, text in rendered.items() if name.endswith("NOTES.txt")), "")


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the pipeline configuration) as readable literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def file_name(obj: Mapping[str, Any]) -> str:
    """``<kind>-<name>.yaml``; Knative Services are ``ksvc-`` to stand apart from core ones."""
    kind = str(obj["kind"]).lower()
    if kind == "service" and str(obj.get("apiVersion", "")).startswith("serving.knative.dev/"):
        kind = "ksvc"
    return f"{kind}-{obj['metadata']['name']}.yaml"


def manifest_files(documents: Sequence[Document], header: str = HEADER) -> dict[str, str]:
    """One file per object, as the chart wrote it (its comments are the knobs' documentation)
    without ``metadata.namespace``, keyed by file name."""
    files: dict[str, str] = {}
    for obj, text in documents:
        portable = dict(obj)
        portable["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "namespace"}
        name = file_name(obj)
        if name in files:
            raise RenderError(f"two rendered objects would both be written to {name}")
        body = _NAMESPACE_LINE.sub(r"\1", text, count=1)
        if yaml.safe_load(body) != portable:  # the text edited is exactly the object less that
            body = yaml.dump(portable, Dumper=_BlockDumper, sort_keys=False, width=4096)
        files[name] = header + body
    return files


def expected_files(values: Mapping[str, Any] | None = None) -> dict[str, str]:
    """What ``k8s/knative/`` holds for ``values`` (default values when None)."""
    return manifest_files(render_documents(values))


def _rendered_by_us(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.read(len(RENDERED_MARK)) == RENDERED_MARK
    except OSError:
        return False


def _our_files(directory: Path) -> set[str]:
    """The YAML files in ``directory`` that an earlier render wrote."""
    if not directory.is_dir():
        return set()
    return {p.name for p in directory.glob("*.yaml") if _rendered_by_us(p)}


def files_in_the_way(
    directory: Path, files: Mapping[str, str], ours: set[str] | None = None
) -> list[str]:
    """Names of files to render that ``directory`` holds already, written by someone else
    (``ours``: ``_our_files(directory)``, when the caller has it)."""
    ours = _our_files(directory) if ours is None else ours
    return sorted(name for name in files if name not in ours and (directory / name).exists())


def _not_ours(path: Path) -> str:
    return f"{path} was not written by render_manifests"


def stale_files(directory: Path, files: Mapping[str, str]) -> list[str]:
    """Names of files in ``directory`` that are missing, different or no longer rendered
    (of the files a render wrote: the operator's own files there are not looked at)."""
    stale = [
        name
        for name, text in files.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
    stale += sorted(_our_files(directory) - set(files))
    return sorted(stale)


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` into ``directory`` and remove the files an earlier render wrote that
    are no longer rendered. Other files there (the operator's values file, a
    kustomization) are left alone, and one in the way of a rendered file stops the write
    before anything is written."""
    directory.mkdir(parents=True, exist_ok=True)
    ours = _our_files(directory)
    in_the_way = files_in_the_way(directory, files, ours)
    if in_the_way:
        raise RenderError(
            f"{_not_ours(directory / in_the_way[0])}; nothing was written (move it, or render"
            " into another folder)"
        )
    for old in ours - set(files):
        (directory / old).unlink()
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


def config_copy_in_sync() -> bool:
    """Whether the chart's copy of the pipeline configuration matches data/."""
    return CONFIG_COPY.is_file() and CONFIG_COPY.read_bytes() == CONFIG_SOURCE.read_bytes()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.render_manifests",
        description="Render helm/salesmart offline into k8s/knative/ (or --out DIR).",
        allow_abbrev=False,  # whole option names only, as the salesmart command
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the directory is out of date"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory to write (default: k8s/knative/); only files a render wrote are"
        " replaced or removed there",
    )
    parser.add_argument(
        "-f",
        "--values",
        dest="values_files",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="values file, as helm -f (repeatable)",
    )
    parser.add_argument(
        "--set",
        dest="set_values",
        action="append",
        default=[],
        metavar="K=V",
        help="as helm --set (repeatable)",
    )
    parser.add_argument(
        "--set-string",
        dest="set_string_values",
        action="append",
        default=[],
        metavar="K=V",
        help="as helm --set-string (repeatable)",
    )
    parser.add_argument(
        "--set-file",
        dest="set_file_values",
        action="append",
        default=[],
        metavar="K=PATH",
        help="as helm --set-file (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = bool(
        args.values_files or args.set_values or args.set_string_values or args.set_file_values
    )
    if overrides and args.out is None:
        print(
            "render_manifests: k8s/knative/ holds the default values only; "
            "give --out DIR to render overrides",
            file=sys.stderr,
        )
        return 2
    directory: Path = args.out or MANIFEST_DIR

    if args.check:
        problems = []
        if not config_copy_in_sync():
            problems.append(
                f"{CONFIG_COPY.relative_to(REPO_ROOT)} differs from "
                f"{CONFIG_SOURCE.relative_to(REPO_ROOT)}"
            )
    elif not config_copy_in_sync():
        CONFIG_COPY.parent.mkdir(parents=True, exist_ok=True)
        CONFIG_COPY.write_bytes(CONFIG_SOURCE.read_bytes())
        # Said: the next `helm install helm/salesmart` ships it too (a local-run tweak).
        copy = (
            CONFIG_COPY.relative_to(REPO_ROOT)
            if CONFIG_COPY.is_relative_to(REPO_ROOT)
            else CONFIG_COPY
        )
        print(
            f"{copy}: copied from {CONFIG_SOURCE.relative_to(REPO_ROOT)}"
            " (the chart's pipelineConfig default)"
        )

    try:
        values = user_values(
            args.values_files, args.set_values, args.set_string_values, args.set_file_values
        )
        options = [
            *(f"-f {path}" for path in args.values_files),
            *(f"--set {shown_set(value)}" for value in args.set_values),
            *(
                f"--set-string {shown_set(value, as_strings=True)}"
                for value in args.set_string_values
            ),
            *(f"--set-file {value}" for value in args.set_file_values),
        ]
        header = overrides_header(options) if overrides else HEADER
        files = manifest_files(render_documents(values), header)
    except (RenderError, OSError) as exc:
        print(f"render_manifests: {exc}", file=sys.stderr)
        return 1

    if args.check:
        in_the_way = files_in_the_way(directory, files)
        problems += [
            f"{_not_ours(directory / name)} (move it, or render into another folder)"
            if name in in_the_way
            else f"{directory / name} is out of date"
            for name in stale_files(directory, files)
        ]
        for problem in problems:
            print(f"render_manifests: {problem}", file=sys.stderr)
        if problems:
            # The same render without --check (into --out's folder, with its overrides).
            given = sys.argv[1:] if argv is None else list(argv)
            again = ["python", "-m", "pipeline.render_manifests"]
            again += [arg for arg in given if arg != "--check"] if args.out else []
            print(f"render_manifests: run `{shlex.join(again)}`", file=sys.stderr)
            return 1
        print(f"{directory}: {len(files)} manifests up to date")
        return 0

    try:
        write_files(directory, files)
    except (RenderError, OSError) as exc:
        print(f"render_manifests: {exc}", file=sys.stderr)
        return 1
    print(f"{directory}: {len(files)} manifests written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
