"""Small readers over registered resources."""

from __future__ import annotations

from typing import Any

from tests.infra.program import SECRET_SIG, ProgramRun, Registered


def unwrap(value: Any) -> Any:
    """The plain value of a property, secret or not."""
    if isinstance(value, dict) and SECRET_SIG in value:
        return value["value"]
    return value


def ingress_rules(run: ProgramRun) -> list[Registered]:
    return run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")


def group_id(run: ProgramRun, suffix: str) -> str:
    """The mock id of a security group, as rules reference it."""
    group = run.one("aws:ec2/securityGroup:SecurityGroup", f"-{suffix}-sg")
    return f"sg-{group.name}"
