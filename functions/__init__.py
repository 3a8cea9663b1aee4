"""Lambda functions of the S3 virus scanner: one package per state machine step."""
