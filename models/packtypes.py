"""The closed set of package types, lightest first, shared by the model, the streams and the schemas."""

from __future__ import annotations

import enum


class PackType(str, enum.Enum):
    """Package types in order of packaging weight, lightest first (the Avro enum `PackType` mirrors it)."""

    SIOC = "sioc"  # ships in its own container: a label only
    POLY_BAG = "poly_bag"
    PADDED_MAILER = "padded_mailer"
    BOX = "box"

    @classmethod
    def ordered(cls) -> list["PackType"]:
        """Lightest first; the order the model's outputs and every per-type array use."""
        return list(cls)

    @property
    def index(self) -> int:
        return PACK_TYPES.index(self)


PACK_TYPES: list[PackType] = PackType.ordered()
