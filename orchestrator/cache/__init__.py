"""The result cache: a node's outputs reused when the same work was done before.

``keys`` says what the same work is (content, not names or times); ``entries``
keeps, per tenant, which run's objects hold its outputs. The scheduler looks
entries up before it queues a node, asks the worker to confirm the image
(``Task.reuse``), copies the outputs and never starts a container for a hit.
"""

from orchestrator.cache.entries import CachedOutput, Entry, ResultCache
from orchestrator.cache.keys import KEY_VERSION, Work, collection_digest, work_key

__all__ = [
    "KEY_VERSION",
    "CachedOutput",
    "Entry",
    "ResultCache",
    "Work",
    "collection_digest",
    "work_key",
]
