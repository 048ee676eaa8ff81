"""The network's traffic matrix, per stack, from each stack's real config."""

from __future__ import annotations

import ipaddress

import pytest

from tests.infra.helpers import group_id, ingress_rules
from tests.infra.program import ProgramRun, run_program

NAT = "aws:ec2/natGateway:NatGateway"
SUBNET = "aws:ec2/subnet:Subnet"


def test_no_ingress_from_anywhere_and_no_ssh(each_stack: ProgramRun) -> None:
    rules = ingress_rules(each_stack)
    assert rules
    for rule in rules:
        cidr = rule.inputs.get("cidrIpv4")
        if cidr is not None:
            assert ipaddress.ip_network(cidr).prefixlen > 0, rule.name
        assert rule.inputs["fromPort"] != 22 and rule.inputs["toPort"] != 22
        assert rule.inputs["ipProtocol"] == "tcp"
    for group in each_stack.of_type("aws:ec2/securityGroup:SecurityGroup"):
        # Inline rules would bypass the reviewed rule resources.
        assert not group.inputs.get("ingress")


def _sources(run: ProgramRun, suffix: str, port: int) -> set[str]:
    target = group_id(run, suffix)
    found = set()
    for rule in ingress_rules(run):
        if rule.inputs["securityGroupId"] == target:
            assert rule.inputs["fromPort"] == rule.inputs["toPort"] == port
            found.add(rule.inputs.get("referencedSecurityGroupId") or rule.inputs["cidrIpv4"])
    return found


def test_database_accepts_app_llm_and_operators_only_in_staging(staging: ProgramRun) -> None:
    assert _sources(staging, "db", 5432) == {
        group_id(staging, "app"),
        group_id(staging, "llm"),
        "203.0.113.10/32",
    }


def test_prod_database_accepts_only_app_and_llm_groups(prod: ProgramRun) -> None:
    assert _sources(prod, "db", 5432) == {group_id(prod, "app"), group_id(prod, "llm")}


def test_llm_host_accepts_app_and_vpc_only(each_stack: ProgramRun) -> None:
    vpc_cidr = each_stack.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"]
    assert _sources(each_stack, "llm", 11434) == {group_id(each_stack, "app"), vpc_cidr}


def test_database_group_has_no_egress(each_stack: ProgramRun) -> None:
    egress = each_stack.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert {r.inputs["securityGroupId"] for r in egress} == {
        group_id(each_stack, "app"),
        group_id(each_stack, "llm"),
    }


def test_one_nat_for_staging_one_per_az_for_prod(staging: ProgramRun, prod: ProgramRun) -> None:
    assert len(staging.of_type(NAT)) == 1
    assert len(prod.of_type(NAT)) == 2


def test_two_azs_with_public_and_private_subnets(each_stack: ProgramRun) -> None:
    subnets = each_stack.of_type(SUBNET)
    assert len(subnets) == 4
    zones = {s.inputs["availabilityZone"] for s in subnets}
    assert len(zones) == 2
    vpc = ipaddress.ip_network(each_stack.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"])
    blocks = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in subnets]
    assert all(b.subnet_of(vpc) for b in blocks)  # type: ignore[arg-type]
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    assert not any(s.inputs.get("mapPublicIpOnLaunch") for s in subnets)


def test_private_subnets_route_through_nat_not_internet_gateway(prod: ProgramRun) -> None:
    tables = prod.of_type("aws:ec2/routeTable:RouteTable")
    private = [t for t in tables if "private" in t.name]
    assert len(private) == 2
    nat_ids = {route["natGatewayId"] for t in private for route in t.inputs["routes"]}
    assert len(nat_ids) == 2  # one per AZ in prod
    assert all("gatewayId" not in route for t in private for route in t.inputs["routes"])


def test_nat_per_az_setting_changes_nat_count() -> None:
    run = run_program("staging", overrides={"natGatewayPerAz": True})
    assert len(run.of_type(NAT)) == 2


def test_operator_cidrs_change_database_rules() -> None:
    run = run_program("staging", overrides={"operatorCidrs": ["198.51.100.7/32", "192.0.2.0/28"]})
    sources = _sources(run, "db", 5432)
    assert {"198.51.100.7/32", "192.0.2.0/28"} <= sources
    assert "203.0.113.10/32" not in sources


def test_existing_vpc_creates_no_network_and_uses_given_subnets() -> None:
    run = run_program(
        "prod",
        overrides={
            "existingVpcId": "vpc-0abc12345",
            "existingPrivateSubnetIds": ["subnet-0aaa", "subnet-0bbb"],
        },
    )
    assert not run.of_type("aws:ec2/vpc:Vpc")
    assert not run.of_type(SUBNET)
    assert not run.of_type(NAT)
    subnet_group = run.one("aws:rds/subnetGroup:SubnetGroup")
    assert subnet_group.inputs["subnetIds"] == ["subnet-0aaa", "subnet-0bbb"]
    assert run.outputs["privateSubnetIds"] == ["subnet-0aaa", "subnet-0bbb"]
    # The LLM host rule uses the looked-up VPC CIDR.
    assert "172.31.0.0/16" in _sources(run, "llm", 11434)
    for group in run.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert group.inputs["vpcId"] == "vpc-0abc12345"


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_app_security_group_is_exported(stack: str, staging: ProgramRun, prod: ProgramRun) -> None:
    run = staging if stack == "staging" else prod
    assert run.outputs["appSecurityGroupId"] == group_id(run, "app")
