"""Drive dynamic providers through the SDK's own provider host, as the Pulumi engine does.

The engine starts ``python -m pulumi.dynamic``, reads the port it prints, and calls it over gRPC
with the generated stubs: ``Configure`` once, then ``Check``/``Diff``/``Create``/``Update``/
``Delete`` with property structs that carry the serialized provider under ``__provider``. This
does the same, and keeps the host's stdout and stderr so tests can read (and scan) them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from migration.providers import PROVIDERS

PROVIDER_KEY = "__provider"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serialize(props: dict[str, Any]) -> Any:
    return asyncio.run(rpc.serialize_properties(props, {}))


@dataclass
class DiffAnswer:
    changes: int
    replaces: list[str]
    delete_before_replace: bool

    @property
    def some(self) -> bool:
        return self.changes == provider_pb2.DiffResponse.DIFF_SOME


class ProviderHost:
    """One ``python -m pulumi.dynamic`` process and a stub connected to it."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.stderr_path = log_dir / "provider-host.stderr"
        self.stdout_path = log_dir / "provider-host.stdout"
        self._stderr = self.stderr_path.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pulumi.dynamic"],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline().decode().strip()
        if not first.isdigit():
            self.close()
            raise RuntimeError(f"provider host did not print its port: {first!r}")
        self._channel = grpc.insecure_channel(f"127.0.0.1:{first}")
        self.stub = provider_pb2_grpc.ResourceProviderStub(self._channel)
        self.stub.Configure(provider_pb2.ConfigureRequest(acceptSecrets=False, args=_serialize({})))
        self._providers = {name: serialize_provider(make()) for name, make in PROVIDERS.items()}

    def _with_provider(self, kind: str, props: dict[str, Any]) -> dict[str, Any]:
        return {**props, PROVIDER_KEY: self._providers[kind]}

    @staticmethod
    def _urn(kind: str) -> str:
        return f"urn:pulumi:test::qckstrt::pulumi-python:dynamic/qckstrt:{kind}::{kind.lower()}"

    def check(
        self, kind: str, news: dict[str, Any], olds: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        response = self.stub.Check(
            provider_pb2.CheckRequest(
                urn=self._urn(kind),
                olds=_serialize(self._with_provider(kind, olds or {})),
                news=_serialize(self._with_provider(kind, news)),
            )
        )
        inputs = rpc.deserialize_properties(response.inputs)
        inputs.pop(PROVIDER_KEY, None)
        return inputs, [(f.property, f.reason) for f in response.failures]

    def diff(self, kind: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffAnswer:
        response = self.stub.Diff(
            provider_pb2.DiffRequest(
                id="x",
                urn=self._urn(kind),
                olds=_serialize(self._with_provider(kind, olds)),
                news=_serialize(self._with_provider(kind, news)),
            )
        )
        return DiffAnswer(response.changes, list(response.replaces), response.deleteBeforeReplace)

    def create(self, kind: str, props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        response = self.stub.Create(
            provider_pb2.CreateRequest(
                urn=self._urn(kind), properties=_serialize(self._with_provider(kind, props))
            )
        )
        outs = rpc.deserialize_properties(response.properties)
        outs.pop(PROVIDER_KEY, None)
        return str(response.id), outs

    def update(
        self, kind: str, id_: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        response = self.stub.Update(
            provider_pb2.UpdateRequest(
                id=id_,
                urn=self._urn(kind),
                olds=_serialize(self._with_provider(kind, olds)),
                news=_serialize(self._with_provider(kind, news)),
            )
        )
        outs = rpc.deserialize_properties(response.properties)
        outs.pop(PROVIDER_KEY, None)
        return dict(outs)

    def delete(self, kind: str, id_: str, props: dict[str, Any]) -> None:
        self.stub.Delete(
            provider_pb2.DeleteRequest(
                id=id_,
                urn=self._urn(kind),
                properties=_serialize(self._with_provider(kind, props)),
            )
        )

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> str:
        """Stop the host; return everything it wrote (stdout after the port, and stderr)."""
        if getattr(self, "_channel", None) is not None:
            self._channel.close()
        self._proc.terminate()
        try:
            out, _ = self._proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        self._stderr.close()
        self.stdout_path.write_bytes(out or b"")
        return (out or b"").decode(errors="replace") + self.stderr_path.read_text(errors="replace")
