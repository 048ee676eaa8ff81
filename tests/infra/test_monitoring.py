"""Alarms wired to the alert topic."""

from __future__ import annotations

from tests.infra.program import ProgramRun, run_program

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def test_four_alarms_notify_the_encrypted_topic(each_stack: ProgramRun) -> None:
    topic = each_stack.one("aws:sns/topic:Topic")
    assert topic.inputs["kmsMasterKeyId"]
    topic_arn = f"arn:aws:sns:us-east-1:123456789012:{topic.name}"
    alarms = {a.inputs["metricName"]: a.inputs for a in each_stack.of_type(ALARM)}
    assert set(alarms) == {
        "CPUUtilization",
        "FreeStorageSpace",
        "DatabaseConnections",
        "StatusCheckFailed",
    }
    db_id = (
        each_stack.one("aws:rds/instance:Instance").inputs.get("identifier") or "qckstrt-db-0a1b2c3"
    )
    for metric, alarm in alarms.items():
        assert alarm["alarmActions"] == [topic_arn], metric
        if metric == "StatusCheckFailed":
            assert alarm["dimensions"] == {"InstanceId": "i-0123456789abcdef0"}
            assert alarm["namespace"] == "AWS/EC2"
        else:
            assert alarm["dimensions"] == {"DBInstanceIdentifier": db_id}
            assert alarm["namespace"] == "AWS/RDS"
    assert alarms["FreeStorageSpace"]["comparisonOperator"] == "LessThanThreshold"
    assert alarms["FreeStorageSpace"]["threshold"] == 5 * 1024**3


def test_email_subscription_only_when_configured(staging: ProgramRun, prod: ProgramRun) -> None:
    assert not staging.of_type("aws:sns/topicSubscription:TopicSubscription")
    [sub] = prod.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sub.inputs["protocol"] == "email"
    assert sub.inputs["endpoint"] == "ops@example.com"


def test_thresholds_follow_config() -> None:
    run = run_program("staging", overrides={"alarmDbCpuPercent": 65, "alarmDbConnections": 42})
    alarms = {a.inputs["metricName"]: a.inputs for a in run.of_type(ALARM)}
    assert alarms["CPUUtilization"]["threshold"] == 65
    assert alarms["DatabaseConnections"]["threshold"] == 42
