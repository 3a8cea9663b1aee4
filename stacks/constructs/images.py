"""Lambda code from the one Dockerfile: two targets, built by `cdk deploy` only."""

from __future__ import annotations

from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_

from stacks.constants import DOCKERFILE, REPO_ROOT


def image_code(target: str, handler: str) -> lambda_.DockerImageCode:
    """``target`` is ``scanner`` (with ClamAV) or ``steps`` (without)."""
    return lambda_.DockerImageCode.from_image_asset(
        str(REPO_ROOT),
        file=DOCKERFILE,
        target=target,
        cmd=[handler],
        platform=ecr_assets.Platform.LINUX_AMD64,
    )
