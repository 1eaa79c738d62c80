"""`Collection`: a record collection declared once — its name, the unique
indexes and the tags a record's data gives it — so that every writer builds
the same `Put` (a writer that forgot an index would free a stream key for
another stream; one that forgot a tag would hide the record from a listing)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from control.store.base import Delete, Put

Derive = Callable[[Mapping[str, Any]], Mapping[str, str]]


def _nothing(_data: Mapping[str, Any]) -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class Collection:
    name: str
    unique: Derive = _nothing
    """index name → value, from the data: held by no other record."""
    tags: Derive = _nothing
    """field → value pairs, from the data, that listings filter on."""

    def put(self, record_id: str, data: dict[str, Any], *, expect_version: int | None = 0) -> Put:
        """Create (`expect_version` 0), replace (the version read) or write."""
        return Put(
            self.name,
            record_id,
            data,
            expect_version=expect_version,
            unique=self.unique(data),
            tags=self.tags(data),
        )

    def delete(self, record_id: str, *, expect_version: int | None = None) -> Delete:
        return Delete(self.name, record_id, expect_version=expect_version)
