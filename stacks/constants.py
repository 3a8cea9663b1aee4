"""Names and sizes in one place."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "docker/Dockerfile"
METRICS_NAMESPACE = "S3VirusScanner"
DEFINITIONS_PREFIX = "clamav/defs"
# The updater's freshclam.dat (client UUID, CDN cool-down): outside the prefix
# the scanners read, and outside the tarball.
FRESHCLAM_STATE_KEY = "clamav/updater/freshclam.dat"

# start_scan: a batch of 10 records, each one StartExecution call.
STARTER_TIMEOUT_S = 30
STARTER_MEMORY_MB = 256
# SQS must not redeliver a record while the starter may still be working on it;
# AWS recommends at least six times the function timeout.
QUEUE_VISIBILITY_FACTOR = 6
# A record that failed this many receives (about 5 starter attempts) goes to the DLQ.
MAX_RECEIVE_COUNT = 5
DLQ_RETENTION_DAYS = 14

# The small steps: JSON in, one or two API calls, JSON out.
STEP_MEMORY_MB = 256
STEP_TIMEOUT_S = 60
WEBHOOK_TIMEOUT_S = 30  # the request itself times out at WEBHOOK_TIMEOUT_SECONDS (10 s)

UPDATER_MEMORY_MB = 2048
UPDATER_TIMEOUT_MINUTES = 15
UPDATER_EPHEMERAL_MB = 2048
# A cold scanner waits at most this long for the cache (while the updater fills
# it), and never more than this share of its own timeout.
DEFINITIONS_WAIT_S = 120
DEFINITIONS_WAIT_SHARE = 0.25
