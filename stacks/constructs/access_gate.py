"""AccessGate: the source bucket's policy, so that only clean objects can be read.

Attached only with ``PROTECT_SOURCE_BUCKET=true``. A bucket has exactly one
policy document, and this construct then owns it: statements added to the
bucket's policy outside the stack are replaced at the next deploy (merge the
gate into an existing policy with ``scanctl policy --apply`` instead, and leave
the setting off). It also denies requests without TLS.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from functions.shared import access_gate


class AccessGate(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        reader_roles: list[iam.IRole],
        tagging_roles: list[iam.IRole],
        unscanned_readers: tuple[str, ...],
    ) -> None:
        super().__init__(scope, construct_id)
        self.statements = access_gate.statements(
            bucket.bucket_arn,
            scanner_roles=[role.role_arn for role in reader_roles],
            tagging_roles=[role.role_arn for role in tagging_roles],
            unscanned_readers=list(unscanned_readers),
        )
        # The stack owns the bucket's one policy document, so it carries the
        # TLS-only rule a bucket policy should have as well.
        tls_only = {
            "Sid": f"{access_gate.SID_PREFIX}TlsOnly",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "s3:*",
            "Resource": [bucket.bucket_arn, bucket.arn_for_objects("*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
        self.policy = s3.CfnBucketPolicy(
            self,
            "Policy",
            bucket=bucket.bucket_name,
            policy_document={"Version": "2012-10-17", "Statement": [tls_only, *self.statements]},
        )
