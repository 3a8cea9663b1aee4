"""Runtime settings: one clear sentence per bad value."""

from __future__ import annotations

import pytest

from functions.shared.config import Settings
from functions.shared.errors import ConfigurationError


def test_defaults():
    settings = Settings.from_env({})
    assert settings.max_object_bytes == 1024 * 1024 * 1024
    assert settings.max_definitions_age_hours == 48
    assert settings.definitions_prefix == "clamav/defs"
    assert settings.quarantine_bucket is None


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MAX_OBJECT_SIZE_MB": "lots"}, "MAX_OBJECT_SIZE_MB"),
        ({"MAX_OBJECT_SIZE_MB": "4096"}, "MAX_OBJECT_SIZE_MB"),  # over ClamAV's 2 GiB
        ({"MAX_DEFINITIONS_AGE_HOURS": "-1"}, "MAX_DEFINITIONS_AGE_HOURS"),
        ({"WEBHOOK_URL": "http://example.com/hook"}, "WEBHOOK_URL"),
        ({"WEBHOOK_URL": "ftp://example.com"}, "WEBHOOK_URL"),
        ({"WEBHOOK_TIMEOUT_SECONDS": "0"}, "WEBHOOK_TIMEOUT_SECONDS"),
        # The updater's freshclam state may not land where the scanners read.
        ({"FRESHCLAM_STATE_KEY": "clamav/defs/freshclam.dat"}, "FRESHCLAM_STATE_KEY"),
        ({"DEFINITIONS_WAIT_SECONDS": "3600"}, "DEFINITIONS_WAIT_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigurationError, match=variable) as info:
        Settings.from_env(env)
    assert "\n" not in str(info.value)


def test_loopback_http_webhook_is_allowed_for_local_runs():
    assert Settings.from_env({"WEBHOOK_URL": "http://127.0.0.1:8080/x"}).webhook_url


def test_required_setting_names_the_variable():
    with pytest.raises(ConfigurationError, match="DDB_TABLE_NAME"):
        Settings.from_env({}).require("table_name", "DDB_TABLE_NAME")
