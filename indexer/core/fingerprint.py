"""What made a vector: the `ModelFingerprint` (model, weights, adapter, template) that every index manifest, item
table, cache key and artifact carries, and the check that two fingerprints agree.

Item vectors are only comparable with user vectors from the same model, adapter and prompt template
(docs/design.md section 2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ModelFingerprint:
    """What made the item vectors; two indexes are comparable only when all four fields are equal."""

    model_id: str
    """Model name, e.g. "SmolLM2-135M-Instruct" or "tiny-llama"."""
    weights_hash: str
    """Short hash of the base weights."""
    adapter_hash: str | None
    """Short hash of a LoRA adapter, or None without one."""
    template_version: str
    """Version of the prompt templates that rendered the item prompts."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ModelFingerprint:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


class ManifestMismatchError(ValueError):
    """A stored index was built by a different model, adapter or template than the one asking for it."""

    def __init__(self, field_name: str, stored: object, expected: object, where: str = "the index") -> None:
        self.field_name = field_name
        self.stored = stored
        self.expected = expected
        super().__init__(
            f"{where} was built with {field_name}={stored!r} but the model has {field_name}={expected!r}; "
            "its item vectors cannot be compared with this model's user vectors: "
            "rebuild the index with `reasonrec index ...`"
        )


def check_fingerprint(stored: ModelFingerprint, expected: ModelFingerprint, where: str = "the index") -> None:
    """Raise `ManifestMismatchError` naming the first field in which `stored` differs from `expected`."""
    for f in fields(ModelFingerprint):
        if getattr(stored, f.name) != getattr(expected, f.name):
            raise ManifestMismatchError(f.name, getattr(stored, f.name), getattr(expected, f.name), where)
