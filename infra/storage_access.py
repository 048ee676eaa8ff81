"""What storage-api may do on AWS: read and write its own prefix of the stack's bucket.

storage-api (kept with ``STORAGE_BACKEND=s3``, deployed with the app outside this stack) keeps
every file at ``<TENANT_ID>/<bucket>/<name>/<version>`` in ``GLOBAL_S3_BUCKET``. The policy grants
exactly what its S3 backend calls (get, head, put, copy, delete, multipart) under
``<tenant>/``, listing only with that prefix, and the stack key's data-key use through S3 (the
bucket encrypts with SSE-KMS, so without it every read and write fails). It grants nothing on
``migration/``, where the database dumps live. The policy is exported by ARN; the operator
attaches it to the role storage-api runs as (ECS task role, instance profile, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

#: What storage-api v1.x's S3 backend calls on objects (``src/storage/backend/s3.ts``).
OBJECT_ACTIONS = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)


@dataclass
class StorageApiAccessArgs:
    bucket_arn: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    tenant_id: str
    region: str
    tags: dict[str, str]


def policy_document(
    bucket_arn: pulumi.Input[str], kms_key_arn: pulumi.Input[str], tenant_id: str, region: str
) -> pulumi.Output[str]:
    """The policy JSON: objects under ``<tenant>/``, listing that prefix, the key via S3 only."""
    return pulumi.Output.json_dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "TenantObjects",
                    "Effect": "Allow",
                    "Action": list(OBJECT_ACTIONS),
                    "Resource": pulumi.Output.concat(bucket_arn, f"/{tenant_id}/*"),
                },
                {
                    # A HEAD of a missing key answers 404 (not 403) only with ListBucket.
                    "Sid": "ListTenantPrefix",
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": bucket_arn,
                    "Condition": {"StringLike": {"s3:prefix": [f"{tenant_id}/*"]}},
                },
                {
                    "Sid": "StackKeyThroughS3",
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": kms_key_arn,
                    "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
                },
            ],
        }
    )


class StorageApiAccess(pulumi.ComponentResource):
    """A managed policy for storage-api's runtime role."""

    policy_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: StorageApiAccessArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("qckstrt:storage:StorageApiAccess", name, None, opts)
        policy = aws.iam.Policy(
            f"{name}-storage-api",
            # The deploy role may manage only policies named qckstrt-*.
            name=f"{name}-storage-api",
            description=(
                f"storage-api: read/write its files under {args.tenant_id}/ of the stack's "
                "bucket; attach to the role storage-api runs as"
            ),
            policy=policy_document(args.bucket_arn, args.kms_key_arn, args.tenant_id, args.region),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.policy_arn = policy.arn
        self.register_outputs({"policyArn": self.policy_arn})
