"""k8s/knative/ is the chart rendered with default values, and the chart's copy of the pipeline
configuration is data/pipeline_config.yaml; `python -m pipeline.render_manifests` keeps both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import render_manifests
from pipeline.render_manifests import (
    CONFIG_COPY,
    CONFIG_SOURCE,
    HEADER,
    MANIFEST_DIR,
    REPO_ROOT,
    expected_files,
    main,
    stale_files,
)


def test_k8s_knative_is_the_chart_rendered_with_default_values() -> None:
    files = expected_files()
    stale = stale_files(MANIFEST_DIR, files)
    hint = "run `python -m pipeline.render_manifests`"
    assert stale == [], f"k8s/knative/ is out of date ({', '.join(stale)}): {hint}"
    on_disk = sorted(p.name for p in MANIFEST_DIR.iterdir())
    assert on_disk == sorted(files)


def test_chart_config_copy_is_the_pipeline_config() -> None:
    assert CONFIG_COPY.read_bytes() == CONFIG_SOURCE.read_bytes(), (
        "helm/salesmart/files/pipeline_config.yaml differs from data/pipeline_config.yaml: "
        "run `python -m pipeline.render_manifests`"
    )


def test_manifests_apply_to_any_namespace() -> None:
    for path in MANIFEST_DIR.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# Rendered from helm/salesmart")
        obj = yaml.safe_load(text)
        assert "namespace" not in obj["metadata"], path.name


def test_manifests_keep_the_charts_comments_on_their_knobs() -> None:
    """kubectl users read these files: the comments the chart writes beside autoscaling,
    concurrency and threads are theirs too (a YAML dump of the objects dropped them)."""
    for name in ("token", "trends-bq", "trends-pg", "dashboard"):
        text = (MANIFEST_DIR / f"ksvc-salesmart-{name}.yaml").read_text(encoding="utf-8")
        function = name.replace("-", "_")
        assert f"# Scaling (functions.{function}.autoscaling)" in text, name
        assert "# At most containerConcurrency requests reach a pod at once" in text, name
        assert "# gunicorn: WORKERS x THREADS requests at once" in text, name


def test_an_object_whose_text_cannot_be_edited_is_written_from_the_object() -> None:
    """The namespace is taken out of the chart's text only where that leaves exactly the
    object less its namespace; otherwise the object itself is written (no comments)."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "a"}}
    odd = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}\n"
    files = render_manifests.manifest_files([render_manifests.Document(obj, odd)], header="")
    assert yaml.safe_load(files["configmap-x.yaml"]) == {**obj, "metadata": {"name": "x"}}


def test_check_mode_passes_now_and_fails_on_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = [sys.executable, "-m", "pipeline.render_manifests", "--check"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout

    # A copy with one edited, one missing and one extra file: all three are reported.
    for name, text in expected_files().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    edited = tmp_path / "ksvc-salesmart-token.yaml"
    edited.write_text(edited.read_text().replace('max-scale: "10"', 'max-scale: "99"'))
    assert edited.read_text() != expected_files()["ksvc-salesmart-token.yaml"]
    (tmp_path / "job-salesmart-migrate.yaml").unlink()
    (tmp_path / "deployment-old.yaml").write_text(HEADER + "kind: Deployment\n")
    # The operator's own files in the folder are neither stale nor touched.
    own = {"values-prod.yaml": "image:\n  tag: v1\n", "kustomization.yaml": "resources: []\n"}
    for name, text in own.items():
        (tmp_path / name).write_text(text)
    assert stale_files(tmp_path, expected_files()) == [
        "deployment-old.yaml",
        "job-salesmart-migrate.yaml",
        "ksvc-salesmart-token.yaml",
    ]
    capsys.readouterr()
    assert main(["--check", "--out", str(tmp_path)]) == 1
    # The command that mends it renders into that folder, not k8s/knative/ (an audit).
    hint = capsys.readouterr().err.splitlines()[-1]
    assert hint == f"render_manifests: run `python -m pipeline.render_manifests --out {tmp_path}`"

    # Writing repairs the directory, and removes what the chart no longer renders.
    assert main(["--out", str(tmp_path)]) == 0
    assert stale_files(tmp_path, expected_files()) == []
    assert not (tmp_path / "deployment-old.yaml").exists()
    assert {name: (tmp_path / name).read_text() for name in own} == own


def test_a_file_of_the_operators_in_the_way_stops_the_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's own file named like a rendered one is not overwritten: nothing is
    written, and the line says which file and why."""
    (tmp_path / "ksvc-salesmart-token.yaml").write_text("# mine\nkind: Service\n")
    (tmp_path / "values-prod.yaml").write_text("image:\n  tag: v1\n")
    assert main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "ksvc-salesmart-token.yaml was not written by render_manifests" in err
    # --check says the same of it (not "out of date", which the write would not mend).
    assert main(["--check", "--out", str(tmp_path)]) == 1
    told = capsys.readouterr().err
    assert "ksvc-salesmart-token.yaml was not written by render_manifests" in told
    assert "ksvc-salesmart-token.yaml is out of date" not in told
    assert "ksvc-salesmart-dashboard.yaml is out of date" in told
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ksvc-salesmart-token.yaml",
        "values-prod.yaml",
    ]
    assert (tmp_path / "ksvc-salesmart-token.yaml").read_text() == "# mine\nkind: Service\n"


def test_overrides_render_elsewhere_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--set", "functions.token.autoscaling.maxScale=3"]) == 2
    assert "--out" in capsys.readouterr().err
    out = tmp_path / "tuned"
    assert main(["--set", "functions.token.autoscaling.maxScale=3", "--out", str(out)]) == 0
    text = (out / "ksvc-salesmart-token.yaml").read_text()
    token = yaml.safe_load(text)
    annotations = token["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/max-scale"] == "3"
    # The files say what they were rendered with, not "default values".
    first = text.splitlines()[0]
    assert (
        first == "# Rendered from helm/salesmart with --set functions.token.autoscaling.maxScale=3"
    )


def test_the_header_hides_secret_values_given_with_set(tmp_path: Path) -> None:
    # The Services and ConfigMaps hold no secret; their header must not add one.
    jwt, password = "j" * 40, "S3cret-" + "p" * 32
    url = f"postgresql://app:{password}@db.internal:5432/salesmart"
    argv = [
        "--set",
        f"secrets.existingSecret=,secrets.jwtSecret={jwt},secrets.piiKey={'k' * 40}",
        "--set-string",
        f"secrets.databaseUrl={url},image.tag=0.2.0",
        "--set",
        r"functions.token.env.GREETING=a\,b",
        # Helm reads "\\" as a backslash: the comma after it separates two settings.
        "--set",
        r"functions.token.env.WINDIR=C:\\,secrets.migrationDatabaseUrl=" + url,
        "--set",
        "secrets.keys.migrationDatabaseUrl=migration-url,secrets.rotation=7",
        # A brace not right after "=" starts no list: the comma still separates settings.
        "--set",
        "functions.token.env.X=a{b,secrets.piiKey=" + "q" * 40,
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    header = (tmp_path / "ksvc-salesmart-token.yaml").read_text().splitlines()[0]
    assert header == (
        "# Rendered from helm/salesmart with --set secrets.existingSecret=,"
        "secrets.jwtSecret=<hidden>,secrets.piiKey=<hidden>"
        r" --set functions.token.env.GREETING=a\,b"
        r" --set functions.token.env.WINDIR=C:\\,secrets.migrationDatabaseUrl=<hidden>"
        # What only names a Secret, a key in it or a rotation is shown.
        " --set secrets.keys.migrationDatabaseUrl=migration-url,secrets.rotation=7"
        " --set functions.token.env.X=a{b,secrets.piiKey=<hidden>"
        # As Helm read them (its parser orders the keys).
        " --set-string image.tag=0.2.0,secrets.databaseUrl=<hidden>"
    )
    for path in tmp_path.glob("*.yaml"):
        if not path.name.startswith("secret-"):
            text = path.read_text()
            assert password not in text and jwt not in text and "q" * 40 not in text, path.name


def test_bad_values_are_reported_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--set", "functions.token.containerConcurrency=5000", "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("render_manifests: ")
    assert "containerConcurrency" in err
    assert not list(tmp_path.iterdir())


def test_write_refreshes_the_config_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "files" / "pipeline_config.yaml"
    monkeypatch.setattr(render_manifests, "CONFIG_COPY", copy)
    assert not render_manifests.config_copy_in_sync()
    assert main(["--out", str(tmp_path / "out")]) == 0
    assert copy.read_bytes() == CONFIG_SOURCE.read_bytes()
    # Said (the next helm install ships it), once: an audit found the copy changed quietly.
    said = capsys.readouterr().out
    assert f"{copy}: copied from data/pipeline_config.yaml" in said
    assert main(["--out", str(tmp_path / "out")]) == 0
    assert "copied from" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "expression",
    [
        r"a=b\,c,secrets.jwtSecret=SECRET1",
        r"w=C:\\,secrets.piiKey=SECRET1",
        "x=a{b,secrets.jwtSecret=SECRET1",
        "tag=v{1,secrets.piiKey=SECRET1}",
        "l={x,y},secrets.databaseUrl=postgresql://u:SECRET1@h/d",
        "a={x}secrets.piiKey=SECRET1",
        r"secrets.migrationDatabaseUrl=postgresql://u:SECRET1@h/d\,x",
    ],
)
def test_no_secret_value_helm_reads_reaches_the_header(expression: str) -> None:
    import helm_python as helm

    secrets = helm.parse_set_string(expression).get("secrets", {})
    assert any("SECRET1" in str(value) for value in secrets.values()), secrets  # Helm sets it
    assert "SECRET1" not in render_manifests.shown_set(expression)
    assert "SECRET1" not in render_manifests.shown_set(expression, as_strings=True)


def test_an_abbreviated_option_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse took `--chec` for --check; a later option sharing its start would change it.
    with pytest.raises(SystemExit) as exited:
        main(["--chec"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --chec" in capsys.readouterr().err
