"""Decoded rows kept by the daemon's store, so that a row read again unchanged is not parsed
again (ADR 0021).

Every cycle reads the rows its facts touch; in a quiet cycle they are the same texts as in
the last one, and parsing their JSON was most of the cycle's CPU. The key is the row's text
itself, so any change to a row (by any writer) is a new key: the memo can never return stale
data, only miss. (A digest of the text cost more than the dict's own hash and compare of the
text: 10 000 rows a cycle.) Callers get a shallow copy, as `model_copy` gives everywhere
else.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# Rows of a 10 000-allocation campaign read in one round (allocations and their jobs), with
# room for the queue head; a Job decodes to about 8 KiB and its text is ~1 KiB, so at most
# ~300 MiB.
DEFAULT_CAPACITY = 32_768


Key = tuple[type[BaseModel], str]


class RowMemo:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._models: OrderedDict[Key, BaseModel] = OrderedDict()
        # The key of the one version of each row (by model and `id`) kept: a newer version
        # replaces it, so superseded versions never crowd current rows out of the LRU (a
        # round of 10 000 changed rows would otherwise evict rows the next cycle reads).
        self._current: dict[tuple[type[BaseModel], str], Key] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _row_id(value: BaseModel) -> tuple[type[BaseModel], str] | None:
        ident = getattr(value, "id", None)
        return (type(value), ident) if isinstance(ident, str) else None

    def _keep(self, key: Key, value: BaseModel) -> None:
        row = self._row_id(value)
        if row is not None:
            older = self._current.get(row)
            if older is not None and older != key:
                self._models.pop(older, None)
            self._current[row] = key
        self._models[key] = value
        if len(self._models) > self.capacity:
            evicted, gone = self._models.popitem(last=False)
            row = self._row_id(gone)
            if row is not None and self._current.get(row) == evicted:
                del self._current[row]

    def remember(self, value: BaseModel, text: str) -> None:
        """A row this store just wrote, as `text`: the next read of it is a hit."""
        self._keep((type(value), text), value)

    def decode(self, model: type[M], text: str | bytes) -> M:
        key = (model, text if isinstance(text, str) else text.decode(errors="surrogateescape"))
        found = self._models.get(key)
        if found is None:
            self.misses += 1
            found = model.model_validate_json(text)
            self._keep(key, found)
        else:
            self.hits += 1
            self._models.move_to_end(key)
        assert isinstance(found, model)
        return found
