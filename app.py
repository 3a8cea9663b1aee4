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
    from stacks.app import build_app

    app, _ = build_app(config)
    app.synth()


if __name__ == "__main__":
    main()
