"""What a LIST of a store returns: keys with their ETag and size, and the requests it took."""

from __future__ import annotations

from pydantic import BaseModel

# S3's ListObjectsV2 returns at most this many keys per request (its documented MaxKeys).
LIST_PAGE_KEYS = 1000


class ObjectInfo(BaseModel):
    """One listed object: its key, a fingerprint of its content (the S3 ETag) and its size."""

    key: str
    etag: str
    size: int


class ObjectListing(BaseModel):
    objects: list[ObjectInfo]
    requests: int  # LIST requests it took (one per page of LIST_PAGE_KEYS keys)
