"""The stack's customer-managed KMS key, shared by RDS, Secrets Manager, S3 and SNS.

Why one key per stack: a single key policy to audit, one rotation schedule, and grants that
follow the stack's lifetime. The database component needs it first, so it is its own component
rather than hidden inside the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class StackKeyArgs:
    deletion_window_days: int
    protect: bool
    tags: dict[str, str]


class StackKey(pulumi.ComponentResource):
    """A rotating KMS key with an alias and a policy that lets CloudWatch alarms publish to SNS."""

    key_arn: pulumi.Output[str]
    key_id: pulumi.Output[str]

    def __init__(self, name: str, args: StackKeyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("qckstrt:security:StackKey", name, None, opts)
        identity = aws.get_caller_identity()
        partition = aws.get_partition().partition
        account_root = f"arn:{partition}:iam::{identity.account_id}:root"
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    # Without this statement IAM policies in the account could not grant the key.
                    "Sid": "AccountAdministers",
                    "Effect": "Allow",
                    "Principal": {"AWS": account_root},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    # CloudWatch alarms publish to the encrypted alert topic.
                    "Sid": "CloudWatchAlarmsPublishToEncryptedTopic",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudwatch.amazonaws.com"},
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                    "Resource": "*",
                },
            ],
        }
        key = aws.kms.Key(
            f"{name}-key",
            description=f"{name}: RDS, Secrets Manager, S3 and SNS encryption",
            enable_key_rotation=True,
            deletion_window_in_days=args.deletion_window_days,
            policy=json.dumps(policy),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        aws.kms.Alias(
            f"{name}-alias",
            name=f"alias/{name}",
            target_key_id=key.key_id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.key_arn = key.arn
        self.key_id = key.key_id
        self.register_outputs({"keyArn": self.key_arn, "keyId": self.key_id})
