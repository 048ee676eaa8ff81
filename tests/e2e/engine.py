"""Mocks that play the Pulumi engine's part for the whole program, data steps included.

AWS resources resolve to real local things: the RDS instance to the embedded SSL-only target (its
RDS-managed master secret stored in moto's Secrets Manager), the Secrets Manager entries the
program declares to moto secrets holding the values the program gave them, the bucket to a moto
bucket. Dynamic resources are really executed, as the provider host would: the serialized
``__provider`` input is deserialized with dill, the inputs are checked, and then either
``create`` runs (a first ``up``), or, given the outputs of an earlier run, ``diff`` is called with
them and the new inputs, and the earlier outputs are kept (the engine's "same"), or, in a
preview, replaced by unknowns (the engine's "update", whose outputs are not known yet).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import dill
from pulumi.dynamic import ResourceProvider
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from tests.infra.program import AwsMocks

DYNAMIC = "pulumi-python:dynamic/"
PROVIDER_KEY = "__provider"


def plain(value: Any) -> Any:
    """`value` with every secret wrapper removed (what a provider receives from the engine)."""
    value = rpc.unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@dataclass
class StepCall:
    """What the engine did with one dynamic resource in one run."""

    kind: str
    name: str
    action: str  # create | same | update
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass
class LocalAws(AwsMocks):
    """AwsMocks whose database, secrets and bucket are real local ones (embedded PG + moto)."""

    db_host: str = "127.0.0.1"
    db_port: int = 5432
    master_user: str = ""
    master_password: str = ""
    #: Outputs of dynamic resources from an earlier run, by resource name.
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)
    preview: bool = False
    calls: list[StepCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        AwsMocks.__init__(self)
        import boto3

        self._sm = boto3.client("secretsmanager", region_name="us-east-1")
        self._s3 = boto3.client("s3", region_name="us-east-1")
        self._secret_arns: dict[str, str] = {}

    def new_resource(
        self, args: pulumi_mocks.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        if args.typ.startswith(DYNAMIC):
            return self._dynamic(args)
        resource_id, state = super().new_resource(args)
        if args.typ == "aws:rds/instance:Instance":
            arn = self._secret(
                "rds!db-e2e",
                json.dumps({"username": self.master_user, "password": self.master_password}),
            )
            state.update(address=self.db_host, port=self.db_port)
            state["masterUserSecrets"][0]["secretArn"] = arn
        elif args.typ == "aws:secretsmanager/secret:Secret":
            # As on AWS, a secret's id is its ARN (what SecretVersion's secretId receives).
            state["arn"] = resource_id = self._secret(str(args.inputs["name"]), None)
        elif args.typ == "aws:secretsmanager/secretVersion:SecretVersion":
            self._sm.put_secret_value(
                SecretId=str(args.inputs["secretId"]),
                SecretString=str(plain(args.inputs["secretString"])),
            )
        elif args.typ == "aws:s3/bucket:Bucket":
            self._s3.create_bucket(Bucket=state["bucket"])
        return resource_id, state

    def _secret(self, name: str, value: str | None) -> str:
        if name not in self._secret_arns:
            kwargs = {"SecretString": value} if value is not None else {}
            self._secret_arns[name] = str(self._sm.create_secret(Name=name, **kwargs)["ARN"])
        return self._secret_arns[name]

    # -- dynamic resources ------------------------------------------------------------------

    def _dynamic(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = plain(dict(args.inputs))
        provider: ResourceProvider = dill.loads(base64.b64decode(inputs.pop(PROVIDER_KEY)))
        kind = args.typ.rsplit(":", 1)[-1]
        # The program declares outputs as None placeholders; the engine drops None inputs.
        inputs = {k: v for k, v in inputs.items() if v is not None}
        old = self.previous.get(args.name)
        checked = provider.check(old or {}, inputs)
        assert checked.failures == [], (kind, [(f.property, f.reason) for f in checked.failures])
        news = checked.inputs
        if old is None:
            created = provider.create(news)
            outs = dict(created.outs or {})
            self.calls.append(StepCall(kind, args.name, "create", news, outs))
            return str(created.id), outs
        diff = provider.diff(f"{kind}-id", old, news)
        assert not diff.replaces, (kind, diff.replaces)
        if not diff.changes:
            self.calls.append(StepCall(kind, args.name, "same", news, old))
            return f"{kind}-id", old
        if self.preview:
            unknown = {k: rpc.UNKNOWN for k in old if k not in news}
            self.calls.append(StepCall(kind, args.name, "update", news, unknown))
            return f"{kind}-id", {**news, **unknown}
        updated = provider.update(f"{kind}-id", old, news)
        outs = dict(updated.outs or {})
        self.calls.append(StepCall(kind, args.name, "update", news, outs))
        return f"{kind}-id", outs
