"""The CDK app: one stack composed of constructs named by capability."""
