"""The CDK app: the scanner stack, with cdk-nag's AwsSolutions checks on every synth."""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.config import DeployConfig
from stacks.scanner_stack import ScannerStack


def build_app(config: DeployConfig, outdir: str | None = None) -> tuple[cdk.App, ScannerStack]:
    app = cdk.App(outdir=outdir) if outdir else cdk.App()
    env_kwargs = {}
    if config.account or config.region:
        env_kwargs["env"] = cdk.Environment(account=config.account, region=config.region)
    stack = ScannerStack(
        app,
        f"S3VirusScanner-{config.environment}",
        config=config,
        description="S3 virus scanner: ClamAV on Step Functions with a warm engine",
        **env_kwargs,
    )
    # A validation plugin (cdk-nag 3.x): an unacknowledged finding fails synth().
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app, stack
