"""RDS PostgreSQL 16: the relational and vector store.

Why RDS manages the master password (``manage_master_user_password``): the password is then
generated, rotated and kept by RDS in Secrets Manager, encrypted with the stack key, and never
passes through Pulumi state. Everything that needs it (the app, the data steps) is given the
secret's ARN and reads it at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.network import POSTGRES_PORT
from infra.settings import DatabaseSettings

ENHANCED_MONITORING_POLICY = "policy/service-role/AmazonRDSEnhancedMonitoringRole"
LOG_EXPORTS = ["postgresql", "upgrade"]


@dataclass
class DatabaseArgs:
    settings: DatabaseSettings
    production: bool
    protect: bool
    subnet_ids: list[pulumi.Output[str]]
    security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    kms_key_id: pulumi.Input[str]
    tags: dict[str, str]


class Database(pulumi.ComponentResource):
    """The RDS instance with its parameter group, subnet group and monitoring role."""

    address: pulumi.Output[str]
    port: pulumi.Output[int]
    name: pulumi.Output[str]
    master_username: pulumi.Output[str]
    master_secret_arn: pulumi.Output[str]
    instance_identifier: pulumi.Output[str]

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("qckstrt:data:Database", name, None, opts)
        self._name = name
        self._args = args
        params = self._create_parameter_group()
        subnets = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=args.subnet_ids,
            description=f"{name}: "
            + (
                "public subnets (operator access)"
                if args.settings.publicly_accessible
                else "private subnets"
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        monitoring_role = self._create_monitoring_role()
        instance = self._create_instance(params, subnets, monitoring_role)
        self.address = instance.address
        self.port = instance.port
        self.name = instance.db_name
        self.master_username = instance.username
        self.instance_identifier = instance.identifier
        self.master_secret_arn = instance.master_user_secrets.apply(
            lambda secrets: secrets[0].secret_arn if secrets else ""
        )
        self.register_outputs(
            {
                "address": self.address,
                "port": self.port,
                "name": self.name,
                "masterSecretArn": self.master_secret_arn,
                "instanceIdentifier": self.instance_identifier,
            }
        )

    def _create_parameter_group(self) -> aws.rds.ParameterGroup:
        s = self._args.settings
        parameters = {
            # RDS's default for 15+, stated here so that nobody turns it off by accident.
            "rds.force_ssl": "1",
            # In KB: HNSW builds spill to disk (and slow down many times) when the graph does
            # not fit. The re-index also raises it per session.
            "maintenance_work_mem": str(s.maintenance_work_mem_mb * 1024),
            "log_min_duration_statement": str(s.slow_query_ms),
            "log_lock_waits": "1",
            "log_temp_files": "0",
        }
        return aws.rds.ParameterGroup(
            f"{self._name}-params",
            family=s.parameter_group_family,
            description=f"{self._name}: SSL only, HNSW-sized maintenance memory, slow-query log",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name=k, value=v, apply_method="immediate")
                for k, v in parameters.items()
            ],
            tags=self._args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_monitoring_role(self) -> aws.iam.Role:
        partition = aws.get_partition().partition
        role = aws.iam.Role(
            f"{self._name}-monitoring",
            assume_role_policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "monitoring.rds.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            tags=self._args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.iam.RolePolicyAttachment(
            f"{self._name}-monitoring-policy",
            role=role.name,
            policy_arn=f"arn:{partition}:iam::aws:{ENHANCED_MONITORING_POLICY}",
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role

    def _create_instance(
        self,
        params: aws.rds.ParameterGroup,
        subnets: aws.rds.SubnetGroup,
        monitoring_role: aws.iam.Role,
    ) -> aws.rds.Instance:
        a = self._args
        s = a.settings
        # The key id is a UUID unique to this stack's lifetime, so a final snapshot can never
        # collide with one left behind by an earlier stack of the same name.
        final_snapshot = (
            None
            if s.skip_final_snapshot
            else pulumi.Output.from_input(a.kms_key_id).apply(
                lambda key_id: f"{self._name}-final-{key_id.replace('-', '')}"
            )
        )
        return aws.rds.Instance(
            f"{self._name}-db",
            engine="postgres",
            engine_version=s.engine_version,
            instance_class=s.instance_class,
            db_name=s.name,
            username=s.master_username,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=a.kms_key_arn,
            port=POSTGRES_PORT,
            allocated_storage=s.allocated_storage_gb,
            max_allocated_storage=s.max_allocated_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=a.kms_key_arn,
            multi_az=s.multi_az,
            publicly_accessible=s.publicly_accessible,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[a.security_group_id],
            parameter_group_name=params.name,
            ca_cert_identifier="rds-ca-rsa2048-g1",
            iam_database_authentication_enabled=True,
            backup_retention_period=s.backup_retention_days,
            backup_window="03:00-04:00",
            maintenance_window="sun:04:30-sun:05:30",
            copy_tags_to_snapshot=True,
            delete_automated_backups=not a.production,
            deletion_protection=s.deletion_protection,
            skip_final_snapshot=s.skip_final_snapshot,
            final_snapshot_identifier=final_snapshot,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=a.kms_key_arn,
            performance_insights_retention_period=s.performance_insights_retention_days,
            monitoring_interval=s.monitoring_interval_seconds,
            monitoring_role_arn=monitoring_role.arn,
            enabled_cloudwatch_logs_exports=LOG_EXPORTS,
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            # Staging applies changes at once; production waits for the maintenance window.
            apply_immediately=not a.production,
            tags=a.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=a.protect),
        )
