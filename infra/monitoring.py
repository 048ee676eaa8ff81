"""Alarms on what breaks a RAG app first: database CPU, storage, connections, and the GPU host.

Why an encrypted topic with the stack key: alarm texts name resources; the key policy already
lets CloudWatch use the key (``infra/encryption.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.settings import MonitoringSettings

GIB = 1024**3


@dataclass
class MonitoringArgs:
    settings: MonitoringSettings
    db_instance_identifier: pulumi.Input[str]
    llm_instance_id: pulumi.Input[str]
    kms_key_id: pulumi.Input[str]
    tags: dict[str, str]


class Monitoring(pulumi.ComponentResource):
    """An SNS topic (optionally with an email subscription) and four CloudWatch alarms."""

    topic_arn: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("qckstrt:monitoring:Monitoring", name, None, opts)
        self._name = name
        self._args = args
        child = pulumi.ResourceOptions(parent=self)
        topic = aws.sns.Topic(
            f"{name}-alerts", kms_master_key_id=args.kms_key_id, tags=args.tags, opts=child
        )
        self.topic_arn = topic.arn
        if args.settings.alert_email:
            aws.sns.TopicSubscription(
                f"{name}-alerts-email",
                topic=topic.arn,
                protocol="email",
                endpoint=args.settings.alert_email,
                opts=child,
            )
        s = args.settings
        db = {"DBInstanceIdentifier": args.db_instance_identifier}
        self._alarm(
            "db-cpu",
            "AWS/RDS",
            "CPUUtilization",
            db,
            "GreaterThanThreshold",
            s.db_cpu_percent,
            "Average",
            f"RDS CPU above {s.db_cpu_percent}%",
        )
        self._alarm(
            "db-free-storage",
            "AWS/RDS",
            "FreeStorageSpace",
            db,
            "LessThanThreshold",
            s.db_free_storage_gb * GIB,
            "Minimum",
            f"RDS free storage below {s.db_free_storage_gb} GiB",
        )
        self._alarm(
            "db-connections",
            "AWS/RDS",
            "DatabaseConnections",
            db,
            "GreaterThanThreshold",
            s.db_connections,
            "Maximum",
            f"RDS connections above {s.db_connections}",
        )
        self._alarm(
            "llm-status-check",
            "AWS/EC2",
            "StatusCheckFailed",
            {"InstanceId": args.llm_instance_id},
            "GreaterThanOrEqualToThreshold",
            1,
            "Maximum",
            "GPU Ollama host failed its EC2 status checks",
        )
        self.register_outputs({"topicArn": self.topic_arn})

    def _alarm(
        self,
        suffix: str,
        namespace: str,
        metric: str,
        dimensions: dict[str, pulumi.Input[str]],
        comparison: str,
        threshold: float,
        statistic: str,
        description: str,
    ) -> None:
        aws.cloudwatch.MetricAlarm(
            f"{self._name}-{suffix}",
            namespace=namespace,
            metric_name=metric,
            dimensions=dimensions,
            comparison_operator=comparison,
            threshold=threshold,
            statistic=statistic,
            period=300,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            # Missing data from a stopped host or database is itself worth a look.
            treat_missing_data="breaching" if namespace == "AWS/EC2" else "missing",
            alarm_description=description,
            alarm_actions=[self.topic_arn],
            ok_actions=[self.topic_arn],
            tags=self._args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
