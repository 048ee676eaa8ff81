"""Run the real Pulumi program (``infra/__main__.py``) under ``pulumi.runtime.set_mocks``.

Why a harness of our own: the Pulumi engine cannot run here, so this plays its part. Config comes
from Pulumi.yaml's declared defaults and the stack's own YAML file (never re-typed in tests), as
the engine would merge them. A recording monitor keeps each registration request as the engine
would receive it, including ``protect`` and the raw serialized inputs in which secret values are
still wrapped, so tests can prove where a plaintext secret may appear.
"""

from __future__ import annotations

import asyncio
import json
import runpy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_in_stack

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "infra" / "__main__.py"
ACCOUNT_ID = "123456789012"
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def config_string(value: Any) -> str:
    """Config values reach a program as strings; structured values as JSON, like the engine."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def stack_config(stack: str) -> dict[str, Any]:
    """Pulumi.yaml defaults overlaid with Pulumi.<stack>.yaml values, keyed ``ns:key``."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    merged: dict[str, Any] = {
        f"qckstrt:{name}": decl["default"]
        for name, decl in project["config"].items()
        if isinstance(decl, dict) and "default" in decl
    }
    stack_file = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    merged.update(stack_file["config"])
    return merged


@dataclass
class Registered:
    """One resource registration as the engine received it."""

    type: str
    name: str
    inputs: dict[str, Any]
    protect: bool
    raw: dict[str, Any]
    parent: str
    urn: str
    custom: bool
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]


@dataclass
class ProgramRun:
    stack: str
    resources: list[Registered]
    outputs: dict[str, Any]
    invokes: list[tuple[str, dict[str, Any]]]
    warnings: list[str] = field(default_factory=list)
    #: Every message the program and its in-process providers logged, any severity.
    logs: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name_contains: str = "") -> Registered:
        found = [r for r in self.of_type(type_) if name_contains in r.name]
        assert len(found) == 1, f"expected one {type_} named *{name_contains}*, got {found}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)


class AwsMocks(pulumi_mocks.Mocks):
    """Answers registrations and invokes as AWS would, with plausible computed outputs."""

    def __init__(self) -> None:
        self.invokes: list[tuple[str, dict[str, Any]]] = []
        self.extra_state: dict[str, Callable[[pulumi_mocks.MockResourceArgs], dict[str, Any]]] = {}

    def new_resource(
        self, args: pulumi_mocks.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        name = args.name
        state = dict(args.inputs)
        arn_base = f"arn:aws:{{svc}}:us-east-1:{ACCOUNT_ID}"
        resource_id = f"{name}-id"
        t = args.typ
        if t == "aws:kms/key:Key":
            resource_id = "1234abcd-12ab-34cd-56ef-1234567890ab"
            state.update(keyId=resource_id, arn=f"{arn_base.format(svc='kms')}:key/{resource_id}")
        elif t == "aws:ec2/vpc:Vpc":
            resource_id = "vpc-0123456789abcdef0"
        elif t == "aws:ec2/subnet:Subnet":
            resource_id = f"subnet-{name}"
        elif t == "aws:ec2/securityGroup:SecurityGroup":
            resource_id = f"sg-{name}"
        elif t == "aws:rds/instance:Instance":
            resource_id = "qckstrt-db-0a1b2c3"
            state.update(
                identifier=resource_id,
                address=f"{resource_id}.abcdefghijkl.us-east-1.rds.amazonaws.com",
                endpoint=f"{resource_id}.abcdefghijkl.us-east-1.rds.amazonaws.com:5432",
                masterUserSecrets=[
                    {
                        "secretArn": f"{arn_base.format(svc='secretsmanager')}:secret:"
                        f"rds!db-0a1b2c3-AbCdEf",
                        "kmsKeyId": args.inputs.get("masterUserSecretKmsKeyId", ""),
                        "secretStatus": "active",
                    }
                ],
            )
        elif t == "aws:rds/parameterGroup:ParameterGroup":
            state.setdefault("name", f"{name}-pg")
        elif t == "aws:rds/subnetGroup:SubnetGroup":
            state.setdefault("name", f"{name}-sng")
        elif t == "aws:iam/policy:Policy":
            state.update(arn=f"arn:aws:iam::{ACCOUNT_ID}:policy/{args.inputs['name']}")
        elif t == "aws:iam/role:Role":
            state.update(arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{name}", name=name)
        elif t == "aws:iam/instanceProfile:InstanceProfile":
            state.update(arn=f"arn:aws:iam::{ACCOUNT_ID}:instance-profile/{name}", name=name)
        elif t == "aws:ec2/instance:Instance":
            resource_id = "i-0123456789abcdef0"
            state.update(privateIp="10.20.128.10")
        elif t == "aws:s3/bucket:Bucket":
            resource_id = f"{name}-a1b2c3d"
            state.update(bucket=resource_id, arn=f"arn:aws:s3:::{resource_id}")
        elif t == "aws:secretsmanager/secret:Secret":
            state.update(
                arn=f"{arn_base.format(svc='secretsmanager')}:secret:"
                f"{args.inputs.get('name', name)}-XyZ123"
            )
        elif t == "aws:sns/topic:Topic":
            state.update(arn=f"{arn_base.format(svc='sns')}:{name}")
        extra = self.extra_state.get(t)
        if extra is not None:
            state.update(extra(args))
        state.setdefault("arn", f"{arn_base.format(svc=t.split(':')[1].split('/')[0])}:{name}")
        return resource_id, state

    def call(
        self, args: pulumi_mocks.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.invokes.append((args.token, dict(args.args)))
        token = args.token
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {
                "names": ["us-east-1a", "us-east-1b", "us-east-1c"],
                "zoneIds": ["use1-az1", "use1-az2", "use1-az4"],
            }, []
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/ci",
                "userId": "AIDAEXAMPLE",
                "id": ACCOUNT_ID,
            }, []
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}, []
        if token == "aws:ec2/getAmi:getAmi":
            return {
                "id": "ami-0dlami0123456789a",
                "imageId": "ami-0dlami0123456789a",
                "name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20261101",
            }, []
        if token == "aws:ec2/getVpc:getVpc":
            return {"id": args.args.get("id"), "cidrBlock": "172.31.0.0/16"}, []
        raise AssertionError(f"unexpected invoke {token}")


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A mock monitor that also keeps what the engine would see of each registration."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            urn = self.make_urn(request.parent, request.type, request.name)
            self.registered.append(
                Registered(
                    type=request.type,
                    name=request.name,
                    inputs=rpc.deserialize_properties(request.object),
                    protect=bool(request.protect),
                    raw=json_format.MessageToDict(request.object),
                    parent=request.parent,
                    urn=urn,
                    custom=bool(request.custom),
                    dependencies=list(request.dependencies),
                    property_dependencies={
                        k: list(v.urns) for k, v in request.propertyDependencies.items()
                    },
                )
            )
        return response


class _WarningCollector(pulumi_mocks.MockEngine):
    def __init__(self, sink: list[str], logs: list[str]) -> None:
        super().__init__(None)
        self._sink = sink
        self._logs = logs

    def Log(self, request: Any) -> None:
        from pulumi.runtime.proto import engine_pb2

        self._logs.append(request.message)
        if request.severity == engine_pb2.WARNING:
            self._sink.append(request.message)
        super().Log(request)  # type: ignore[no-untyped-call]


SOURCE_URL = "postgresql://postgres:Sup3rS3cretPw-9f2@db.supabase.internal:5432/postgres"


def run_program(
    stack: str,
    overrides: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    preview: bool = False,
    mocks: AwsMocks | None = None,
) -> ProgramRun:
    """Run ``infra/__main__.py`` for ``stack`` with its real config plus ``overrides``.

    ``overrides`` keys may omit the ``qckstrt:`` namespace. ``secrets`` are set as secret config,
    as ``pulumi config set --secret`` would; by default the source URL is set, as the README's
    first step does (pass ``{}`` for a stack without it).
    """
    if secrets is None:
        secrets = {"sourceDatabaseUrl": SOURCE_URL}
    config = stack_config(stack)
    for key, value in {**(overrides or {}), **(secrets or {})}.items():
        config[key if ":" in key else f"qckstrt:{key}"] = value
    secret_keys = [k if ":" in k else f"qckstrt:{k}" for k in (secrets or {})]
    mocks = mocks or AwsMocks()
    monitor = RecordingMonitor(mocks)
    warnings: list[str] = []
    logs: list[str] = []

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi_settings.ROOT.set(None)
    pulumi_mocks.set_mocks(mocks, project="qckstrt", stack=stack, preview=preview, monitor=monitor)
    pulumi_settings.SETTINGS.engine = _WarningCollector(warnings, logs)
    set_all_config({k: config_string(v) for k, v in config.items()}, secret_keys)
    # set_mocks registered a root stack; the program gets a fresh one as under `pulumi up`.
    pulumi_settings.ROOT.set(None)
    roots: list[Any] = []

    def main() -> None:
        # The stack resource lives in the program's context; keep it to read the exports.
        roots.append(pulumi_settings.get_root_resource())
        runpy.run_path(str(PROGRAM), run_name="__main__")

    try:
        loop.run_until_complete(run_in_stack(main))
        outputs = loop.run_until_complete(_resolve(getattr(roots[0], "outputs", {})))
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    return ProgramRun(stack, monitor.registered, outputs, mocks.invokes, warnings, logs)


async def _resolve(outputs: dict[str, Any]) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, value in outputs.items():
        out = pulumi.Output.from_input(value)
        resolved[name] = await out.future()
    return resolved


def walk_strings(value: Any, inside_secret: bool = False) -> Iterator[tuple[str, bool]]:
    """Yield every string in a serialized property tree, with whether it sits inside a secret."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            yield from walk_strings(value.get("value"), True)
            return
        for v in value.values():
            yield from walk_strings(v, inside_secret)
    elif isinstance(value, list):
        for v in value:
            yield from walk_strings(v, inside_secret)
    elif isinstance(value, str):
        yield value, inside_secret
