"""Backup and restore, as docs/OPERATIONS.md describes it, tested once end to end:
pg_dump (custom format) of the database + a tar of the artifacts folder, restored
into a fresh database on the same server and a fresh folder; rows and artifact
checksums must match."""

from __future__ import annotations

import subprocess
import tarfile
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection


def pg_bin(name: str) -> str:
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)


def conn_args(dbname: str) -> list[str]:
    db = connection.settings_dict
    return ["-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], "-d", dbname]


@pytest.mark.slow
def test_a_dump_and_artifact_tar_restore_into_a_fresh_database_with_identical_data(
    transactional_db, alice, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import torch

    from classifiers.ml.checkpoints import save_artifact, verify_artifact
    from constitutions.models import ConstitutionVersion
    from tests.factories import published_constitution
    from tests.training_helpers import make_dataset, make_model

    version = published_constitution("widgets", user=alice)
    dataset = make_dataset(version)
    relative = f"backup-test-{uuid.uuid4().hex[:8]}/input"
    checksum = save_artifact(
        settings.ARTIFACTS_DIR / relative, tensors={"head": {"w": torch.arange(6.0)}},
        config={"mode": "fast"}, code_version="test",
    )  # fmt: skip
    model = make_model(dataset, "input", path=relative)
    model.checksum = checksum
    model.save()

    source = connection.settings_dict["NAME"]
    dump = tmp_path / "guardweb.dump"
    subprocess.run([pg_bin("pg_dump"), "-Fc", "-f", str(dump), *conn_args(source)],
                   check=True, capture_output=True)  # fmt: skip
    archive = tmp_path / "artifacts.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(settings.ARTIFACTS_DIR / relative, arcname=relative)

    restored_db = f"{source}_restored"
    admin = connection.settings_dict
    conninfo = f"host={admin['HOST']} port={admin['PORT']} user={admin['USER']} dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True) as pg:
        pg.execute(f'DROP DATABASE IF EXISTS "{restored_db}"')
        pg.execute(f'CREATE DATABASE "{restored_db}"')
    try:
        subprocess.run([pg_bin("pg_restore"), "--no-owner", *conn_args(restored_db), str(dump)],
                       check=True, capture_output=True)  # fmt: skip
        restored_dir = tmp_path / "restored-artifacts"
        with tarfile.open(archive) as tar:
            tar.extractall(restored_dir, filter="data")

        tables = ["constitutions_constitutionversion", "constitutions_category",
                  "classifiers_dataset", "classifiers_datasetexample",
                  "classifiers_modelversion", "auth_user"]  # fmt: skip
        with psycopg.connect(conninfo.replace("dbname=postgres", f"dbname={restored_db}")) as pg:
            counts = {t: pg.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
            content = pg.execute(
                "SELECT content FROM constitutions_constitutionversion WHERE id = %s",
                (version.pk,),
            ).fetchone()[0]
            path, stored_checksum = pg.execute(
                "SELECT path, checksum FROM classifiers_modelversion WHERE id = %s", (model.pk,)
            ).fetchone()
        with connection.cursor() as cursor:
            originals = {}
            for table in tables:
                cursor.execute(f"SELECT count(*) FROM {table}")
                originals[table] = cursor.fetchone()[0]
        assert counts == originals and counts["classifiers_datasetexample"] > 0
        assert content == ConstitutionVersion.objects.get(pk=version.pk).content
        assert (path, stored_checksum) == (relative, checksum)
        # The restored artifact verifies against its own manifest and the row.
        assert verify_artifact(restored_dir / path)["checksum"] == stored_checksum
    finally:
        with psycopg.connect(conninfo, autocommit=True) as pg:
            pg.execute(f'DROP DATABASE IF EXISTS "{restored_db}"')
        import shutil

        shutil.rmtree(settings.ARTIFACTS_DIR / relative.split("/")[0], ignore_errors=True)
