"""`python app.py` with a wrong configuration: one sentence, exit status 2, no traceback."""

from __future__ import annotations

import pytest

from tests.infrastructure.conftest import REPO, SOURCE_ARN, run_app


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "SOURCE_BUCKET_ARN"),
        ({"SOURCE_BUCKET_ARN": "my-uploads"}, "SOURCE_BUCKET_ARN"),
        ({"SOURCE_BUCKET_ARN": "arn:aws:s3:::Bad_Name"}, "SOURCE_BUCKET_ARN"),
        (
            {"SOURCE_BUCKET_ARN": SOURCE_ARN, "QUARANTINE_BUCKET_ARN": SOURCE_ARN},
            "QUARANTINE_BUCKET_ARN",
        ),
        (
            {"SOURCE_BUCKET_ARN": SOURCE_ARN, "QUARANTINE_BUCKET_ARN": "quarantine"},
            "QUARANTINE_BUCKET_ARN",
        ),
        (
            {"SOURCE_BUCKET_ARN": SOURCE_ARN, "WEBHOOK_URL": "http://hooks.example.com/x"},
            "WEBHOOK_URL",
        ),
        ({"SOURCE_BUCKET_ARN": SOURCE_ARN, "WEBHOOK_URL": "hooks.example.com"}, "WEBHOOK_URL"),
        ({"SOURCE_BUCKET_ARN": SOURCE_ARN, "ACCOUNT_ID": "12345"}, "ACCOUNT_ID"),
        ({"SOURCE_BUCKET_ARN": SOURCE_ARN, "REGION": "moon-1"}, "REGION"),
        ({"SOURCE_BUCKET_ARN": SOURCE_ARN, "ENVIRONMENT": "prod env!"}, "ENVIRONMENT"),
        (
            {"SOURCE_BUCKET_ARN": SOURCE_ARN, "SOURCE_BUCKET_KMS_KEY_ARN": "key-1"},
            "SOURCE_BUCKET_KMS_KEY_ARN",
        ),
        (
            {"SOURCE_BUCKET_ARN": SOURCE_ARN, "DEFINITIONS_UPDATE_SCHEDULE": "hourly"},
            "DEFINITIONS_UPDATE_SCHEDULE",
        ),
        ({"SOURCE_BUCKET_ARN": SOURCE_ARN, "SCANNER_MEMORY_MB": "lots"}, "SCANNER_MEMORY_MB"),
        ({"SOURCE_BUCKET_ARN": SOURCE_ARN, "MAX_OBJECT_SIZE_MB": "4096"}, "MAX_OBJECT_SIZE_MB"),
        (
            {"SOURCE_BUCKET_ARN": SOURCE_ARN, "MAX_OBJECT_SIZE_MB": "2000"},
            "SCANNER_EPHEMERAL_STORAGE_MB",
        ),
        (
            {"SOURCE_BUCKET_ARN": SOURCE_ARN, "PROTECT_SOURCE_BUCKET": "yes"},
            "PROTECT_SOURCE_BUCKET",
        ),
        (
            {
                "SOURCE_BUCKET_ARN": SOURCE_ARN,
                "PROTECT_SOURCE_BUCKET": "true",
                "UNSCANNED_READERS": "arn:aws:iam::111122223333:role/admin,alice",
            },
            "UNSCANNED_READERS",
        ),
        (
            {
                "SOURCE_BUCKET_ARN": SOURCE_ARN,
                "UNSCANNED_READERS": "arn:aws:iam::111122223333:role/admin",
            },
            "UNSCANNED_READERS",
        ),
        ({"SOURCE_BUCKET_ARN": SOURCE_ARN, "WORKFLOW_TYPE": "fast"}, "WORKFLOW_TYPE"),
        ({"SOURCE_BUCKET_ARN": SOURCE_ARN, "EXPRESS_MAX_OBJECT_MB": "64"}, "EXPRESS_MAX_OBJECT_MB"),
        (
            {
                "SOURCE_BUCKET_ARN": SOURCE_ARN,
                "WORKFLOW_TYPE": "EXPRESS",
                "EXPRESS_LOG_EXECUTION_DATA": "maybe",
            },
            "EXPRESS_LOG_EXECUTION_DATA",
        ),
        (
            {"SOURCE_BUCKET_ARN": SOURCE_ARN, "RETROSCAN_AFTER_UPDATE_HOURS": "-1"},
            "RETROSCAN_AFTER_UPDATE_HOURS",
        ),
        (
            {"SOURCE_BUCKET_ARN": SOURCE_ARN, "RESCAN_INVENTORY_BUCKET_ARN": "inventory"},
            "RESCAN_INVENTORY_BUCKET_ARN",
        ),
    ],
)
def test_bad_configuration_is_one_clear_sentence(tmp_path, env, variable):
    result = run_app(env, tmp_path)

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert lines[0].startswith("Configuration error: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cdk.out").exists()


def test_dotenv_file_is_read(tmp_path):
    # A value in .env is used (and here rejected, which proves it was read).
    (tmp_path / ".env").write_text(f"SOURCE_BUCKET_ARN={SOURCE_ARN}\nWEBHOOK_URL=http://insecure\n")
    result = run_app({}, tmp_path)
    assert result.returncode == 2
    assert "WEBHOOK_URL" in result.stderr


def test_environment_wins_over_dotenv(tmp_path):
    (tmp_path / ".env").write_text("SOURCE_BUCKET_ARN=not-an-arn\n")
    result = run_app({"SOURCE_BUCKET_ARN": SOURCE_ARN, "REGION": "nowhere"}, tmp_path)
    assert result.returncode == 2
    assert "REGION" in result.stderr  # SOURCE_BUCKET_ARN came from the environment


def test_the_example_configuration_is_refused_until_the_bucket_is_named(tmp_path):
    # GIVEN .env.example copied as it is (the README's first deploy step)
    example = (REPO / ".env.example").read_text()
    (tmp_path / ".env").write_text(example)

    # THEN the synth stops with one sentence: the placeholder is nobody's bucket
    result = run_app({}, tmp_path)
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "SOURCE_BUCKET_ARN is still .env.example's placeholder" in line

    # WHEN the bucket is named, every other value of the example is accepted
    (tmp_path / ".env").write_text(
        example.replace("arn:aws:s3:::<your-bucket-name>", "arn:aws:s3:::acme-uploads")
    )
    from dotenv import dotenv_values

    from stacks.config import load_deploy_config

    values = {k: v for k, v in dotenv_values(tmp_path / ".env").items() if v is not None}
    assert load_deploy_config(values).source_bucket_name == "acme-uploads"
