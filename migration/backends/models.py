"""Known embedding models and their output dimensions.

Why a static table: `pulumi preview` and the Pulumi program must compare a model with the
stack's `vectorDimensions` without loading the model (no torch in a preview, no hub access).
Models not listed here are checked when the re-index loads them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    """An embedding model the app and the re-index can both use."""

    dimensions: int
    #: The same model as served to the app by transformers.js (EMBEDDINGS_XENOVA_MODEL).
    xenova_name: str


KNOWN_MODELS: dict[str, KnownModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": KnownModel(384, "Xenova/all-MiniLM-L6-v2"),
    "sentence-transformers/all-MiniLM-L12-v2": KnownModel(384, "Xenova/all-MiniLM-L12-v2"),
    "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2": KnownModel(
        384, "Xenova/paraphrase-multilingual-MiniLM-L12-v2"
    ),
    "sentence-transformers/all-mpnet-base-v2": KnownModel(768, "Xenova/all-mpnet-base-v2"),
    "sentence-transformers/multi-qa-MiniLM-L6-cos-v1": KnownModel(
        384, "Xenova/multi-qa-MiniLM-L6-cos-v1"
    ),
    "BAAI/bge-small-en-v1.5": KnownModel(384, "Xenova/bge-small-en-v1.5"),
    "BAAI/bge-base-en-v1.5": KnownModel(768, "Xenova/bge-base-en-v1.5"),
    "BAAI/bge-large-en-v1.5": KnownModel(1024, "Xenova/bge-large-en-v1.5"),
    "intfloat/e5-small-v2": KnownModel(384, "Xenova/e5-small-v2"),
    "intfloat/e5-base-v2": KnownModel(768, "Xenova/e5-base-v2"),
    "thenlper/gte-small": KnownModel(384, "Xenova/gte-small"),
}

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def model_key(name: str) -> str:
    """Normalise a model reference for lookup in :data:`KNOWN_MODELS`.

    Accepts the short sentence-transformers form (``all-MiniLM-L6-v2``), a pinned revision
    (``name@<revision>``) and the Xenova name, because operators write all three.
    """
    base = name.split("@", 1)[0].strip()
    if base in KNOWN_MODELS:
        return base
    for full, known in KNOWN_MODELS.items():
        if base in (full.split("/", 1)[1], known.xenova_name):
            return full
    return base


def known_dimensions(name: str) -> int | None:
    """The output dimension of a known model, or None when the model is not in the table."""
    known = KNOWN_MODELS.get(model_key(name))
    return known.dimensions if known else None


def xenova_name(name: str) -> str | None:
    """The transformers.js name the app uses for the same model, when known."""
    known = KNOWN_MODELS.get(model_key(name))
    return known.xenova_name if known else None
