"""The GPU host that serves the app's LLM through Ollama.

Why a plain EC2 instance and not a managed endpoint: the app speaks Ollama's API and names an
Ollama model (``falcon``); one GPU instance in a private subnet, reached only from the app and the
VPC, keeps that contract. Access is through SSM Session Manager: no key pair, no SSH rule.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra.settings import LlmSettings

USER_DATA_TEMPLATE = Path(__file__).with_name("llm_host_user_data.sh.tpl")
#: AWS Deep Learning Base GPU AMI (NVIDIA driver, CUDA), Ubuntu 22.04, x86_64.
DLAMI_NAME_PATTERN = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
SSM_CORE_POLICY = "policy/AmazonSSMManagedInstanceCore"


class _UserDataTemplate(string.Template):
    # '@@' keeps bash's own ${...} untouched.
    delimiter = "@@"


def render_user_data(settings: LlmSettings) -> str:
    """Render the cloud-init script; a placeholder without a value raises ``KeyError``."""
    template = _UserDataTemplate(USER_DATA_TEMPLATE.read_text())
    return template.substitute(
        model=settings.model,
        ollama_version=settings.ollama_version,
        port=str(settings.port),
    )


@dataclass
class LlmHostArgs:
    settings: LlmSettings
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    tags: dict[str, str]


class LlmHost(pulumi.ComponentResource):
    """Ollama on a GPU instance: IMDSv2 only, encrypted root volume, SSM-only instance profile."""

    instance_id: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(self, name: str, args: LlmHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("qckstrt:llm:LlmHost", name, None, opts)
        self._name = name
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        profile = self._create_instance_profile(args.tags)
        ami_id = (
            s.ami_id
            or aws.ec2.get_ami(
                most_recent=True,
                owners=["amazon"],
                filters=[
                    aws.ec2.GetAmiFilterArgs(name="name", values=[DLAMI_NAME_PATTERN]),
                    aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
                    aws.ec2.GetAmiFilterArgs(name="state", values=["available"]),
                ],
            ).id
        )
        instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ami_id,
            instance_type=s.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=[args.security_group_id],
            associate_public_ip_address=False,
            iam_instance_profile=profile.name,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
                instance_metadata_tags="disabled",
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_type="gp3",
                volume_size=s.root_volume_gb,
                encrypted=True,
                kms_key_id=args.kms_key_arn,
                delete_on_termination=True,
            ),
            monitoring=True,
            user_data=render_user_data(s),
            # A new script means a new boot: replace the host rather than leave it half-configured.
            user_data_replace_on_change=True,
            tags={**args.tags, "Name": f"{name}-ollama"},
            volume_tags={**args.tags, "Name": f"{name}-ollama-root"},
            opts=child,
        )
        self.instance_id = instance.id
        self.private_ip = instance.private_ip
        self.url = instance.private_ip.apply(lambda ip: f"http://{ip}:{s.port}")
        self.register_outputs(
            {"instanceId": self.instance_id, "privateIp": self.private_ip, "url": self.url}
        )

    def _create_instance_profile(self, tags: dict[str, str]) -> aws.iam.InstanceProfile:
        partition = aws.get_partition().partition
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{self._name}-role",
            assume_role_policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{self._name}-ssm",
            role=role.name,
            policy_arn=f"arn:{partition}:iam::aws:{SSM_CORE_POLICY}",
            opts=child,
        )
        return aws.iam.InstanceProfile(f"{self._name}-profile", role=role.name, opts=child)
