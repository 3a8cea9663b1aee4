#!/usr/bin/env python3
"""The CDK app: `npx cdk synth` / `npx cdk deploy` (or `python app.py` to synthesize).

Configuration comes from the environment and `.env` (see `.env.example`). A
wrong value stops here with one sentence naming the variable, exit status 2.
"""

from __future__ import annotations

import os
import sys

from dotenv import dotenv_values

from stacks.config import DeployConfigError, load_deploy_config


def main() -> None:
    env = {**dotenv_values(".env"), **os.environ}
    try:
        config = load_deploy_config({k: v for k, v in env.items() if v is not None})
    except DeployConfigError as err:
        print(f"Configuration error: {err}", file=sys.stderr)
        sys.exit(2)

    # Imported after the configuration check: a bad value answers instantly.
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    from stacks.scanner_stack import ScannerStack

    app = cdk.App()
    env_kwargs = {}
    if config.account or config.region:
        env_kwargs["env"] = cdk.Environment(account=config.account, region=config.region)
    ScannerStack(
        app,
        f"S3VirusScanner-{config.environment}",
        config=config,
        description="S3 virus scanner: ClamAV on Step Functions with a warm engine",
        **env_kwargs,
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    app.synth()


if __name__ == "__main__":
    main()
