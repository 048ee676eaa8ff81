"""The network: a VPC over two AZs (or an existing one) and the security groups tying it together.

Why the security groups live here and not beside their resources: every rule names another
group (database <- app, LLM host, operators), so declaring all groups in one place keeps the
whole traffic matrix readable in one file and lets tests assert it as one table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.settings import NetworkSettings

POSTGRES_PORT = 5432
OLLAMA_PORT = 11434
AZ_COUNT = 2


@dataclass
class NetworkArgs:
    settings: NetworkSettings
    tags: dict[str, str]


class Network(pulumi.ComponentResource):
    """VPC, subnets, routing and the app, database and LLM host security groups."""

    vpc_id: pulumi.Output[str]
    vpc_cidr: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    app_security_group_id: pulumi.Output[str]
    database_security_group_id: pulumi.Output[str]
    llm_security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("qckstrt:network:Network", name, None, opts)
        self._name = name
        self._args = args
        self._child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        if s.existing_vpc_id:
            self._use_existing_vpc(s)
        else:
            self._create_vpc(s)
        self._create_security_groups(s)
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "vpcCidr": self.vpc_cidr,
                "publicSubnetIds": self.public_subnet_ids,
                "privateSubnetIds": self.private_subnet_ids,
                "appSecurityGroupId": self.app_security_group_id,
                "databaseSecurityGroupId": self.database_security_group_id,
                "llmSecurityGroupId": self.llm_security_group_id,
            }
        )

    def _tags(self, suffix: str) -> dict[str, str]:
        return {**self._args.tags, "Name": f"{self._name}-{suffix}"}

    def _use_existing_vpc(self, s: NetworkSettings) -> None:
        vpc = aws.ec2.get_vpc_output(id=s.existing_vpc_id)
        self.vpc_id = pulumi.Output.from_input(s.existing_vpc_id)
        self.vpc_cidr = vpc.cidr_block
        self.public_subnet_ids = [pulumi.Output.from_input(i) for i in s.existing_public_subnet_ids]
        self.private_subnet_ids = [
            pulumi.Output.from_input(i) for i in s.existing_private_subnet_ids
        ]

    def _create_vpc(self, s: NetworkSettings) -> None:
        zones = aws.get_availability_zones(state="available").names[:AZ_COUNT]
        if len(zones) < AZ_COUNT:
            raise pulumi.RunError(
                f"the region offers {len(zones)} availability zone(s); the stack needs {AZ_COUNT}"
            )
        vpc = aws.ec2.Vpc(
            f"{self._name}-vpc",
            cidr_block=s.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=self._tags("vpc"),
            opts=self._child,
        )
        self.vpc_id = vpc.id
        self.vpc_cidr = vpc.cidr_block
        # Four equal blocks: public a/b, private a/b.
        blocks = list(ipaddress.ip_network(s.vpc_cidr).subnets(prefixlen_diff=2))
        igw = aws.ec2.InternetGateway(
            f"{self._name}-igw", vpc_id=vpc.id, tags=self._tags("igw"), opts=self._child
        )
        public_rt = aws.ec2.RouteTable(
            f"{self._name}-public-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=self._tags("public-rt"),
            opts=self._child,
        )
        public: list[aws.ec2.Subnet] = []
        private: list[aws.ec2.Subnet] = []
        for i, zone in enumerate(zones):
            letter = zone[-1]
            pub = aws.ec2.Subnet(
                f"{self._name}-public-{letter}",
                vpc_id=vpc.id,
                cidr_block=str(blocks[i]),
                availability_zone=zone,
                # Nothing launched here needs a public IP by default; the NAT has an EIP and a
                # public database gets its address from RDS.
                map_public_ip_on_launch=False,
                tags=self._tags(f"public-{letter}"),
                opts=self._child,
            )
            aws.ec2.RouteTableAssociation(
                f"{self._name}-public-{letter}-rta",
                subnet_id=pub.id,
                route_table_id=public_rt.id,
                opts=self._child,
            )
            public.append(pub)
            private.append(
                aws.ec2.Subnet(
                    f"{self._name}-private-{letter}",
                    vpc_id=vpc.id,
                    cidr_block=str(blocks[AZ_COUNT + i]),
                    availability_zone=zone,
                    map_public_ip_on_launch=False,
                    tags=self._tags(f"private-{letter}"),
                    opts=self._child,
                )
            )
        nat_count = AZ_COUNT if s.nat_gateway_per_az else 1
        nats = []
        for i in range(nat_count):
            letter = zones[i][-1]
            eip = aws.ec2.Eip(
                f"{self._name}-nat-{letter}-eip",
                domain="vpc",
                tags=self._tags(f"nat-{letter}"),
                opts=self._child,
            )
            nats.append(
                aws.ec2.NatGateway(
                    f"{self._name}-nat-{letter}",
                    allocation_id=eip.id,
                    subnet_id=public[i].id,
                    tags=self._tags(f"nat-{letter}"),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )
        for i, subnet in enumerate(private):
            letter = zones[i][-1]
            nat = nats[i % nat_count]
            rt = aws.ec2.RouteTable(
                f"{self._name}-private-{letter}-rt",
                vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags=self._tags(f"private-{letter}-rt"),
                opts=self._child,
            )
            aws.ec2.RouteTableAssociation(
                f"{self._name}-private-{letter}-rta",
                subnet_id=subnet.id,
                route_table_id=rt.id,
                opts=self._child,
            )
        self.public_subnet_ids = [p.id for p in public]
        self.private_subnet_ids = [p.id for p in private]

    def _group(self, suffix: str, description: str) -> aws.ec2.SecurityGroup:
        # No inline rules: rules are separate resources, so changing one never replaces a group.
        return aws.ec2.SecurityGroup(
            f"{self._name}-{suffix}-sg",
            vpc_id=self.vpc_id,
            description=description,
            tags=self._tags(f"{suffix}-sg"),
            opts=self._child,
        )

    def _ingress_from_group(
        self, name: str, group: aws.ec2.SecurityGroup, source: aws.ec2.SecurityGroup, port: int
    ) -> None:
        aws.vpc.SecurityGroupIngressRule(
            f"{self._name}-{name}",
            security_group_id=group.id,
            referenced_security_group_id=source.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=name,
            opts=self._child,
        )

    def _ingress_from_cidr(
        self, name: str, group: aws.ec2.SecurityGroup, cidr: pulumi.Input[str], port: int
    ) -> None:
        aws.vpc.SecurityGroupIngressRule(
            f"{self._name}-{name}",
            security_group_id=group.id,
            cidr_ipv4=cidr,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=name,
            opts=self._child,
        )

    def _egress_all(self, name: str, group: aws.ec2.SecurityGroup) -> None:
        aws.vpc.SecurityGroupEgressRule(
            f"{self._name}-{name}",
            security_group_id=group.id,
            cidr_ipv4="0.0.0.0/0",
            ip_protocol="-1",
            description=name,
            opts=self._child,
        )

    def _create_security_groups(self, s: NetworkSettings) -> None:
        app = self._group(
            "app", "QCKSTRT application tasks (attach to the app's ECS/EKS workloads)"
        )
        db = self._group("db", "QCKSTRT PostgreSQL: app, LLM host and listed operators only")
        llm = self._group("llm", "QCKSTRT Ollama host: app and VPC only, no SSH (use SSM)")
        self._ingress_from_group("db-from-app", db, app, POSTGRES_PORT)
        # The LLM host is also the SSM port-forward hop for operators reaching a private database.
        self._ingress_from_group("db-from-llm", db, llm, POSTGRES_PORT)
        if s.db_publicly_accessible:
            for i, cidr in enumerate(s.operator_cidrs):
                self._ingress_from_cidr(f"db-from-operator-{i}", db, cidr, POSTGRES_PORT)
        self._ingress_from_group("llm-from-app", llm, app, OLLAMA_PORT)
        self._ingress_from_cidr("llm-from-vpc", llm, self.vpc_cidr, OLLAMA_PORT)
        # Egress: the app and the LLM host need AWS APIs, SSM and model downloads (through NAT).
        # The database initiates nothing, so its group has no egress rule at all.
        self._egress_all("app-egress", app)
        self._egress_all("llm-egress", llm)
        self.app_security_group_id = app.id
        self.database_security_group_id = db.id
        self.llm_security_group_id = llm.id
