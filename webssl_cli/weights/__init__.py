"""Model weights: download once (HF snapshot or official .pth), cache, verify, use offline.

Public API (used by ``webssl download``, ``webssl extract`` and ``webssl list-models``):

- :class:`WeightsRequest` and :func:`resolve_weights` -> the path to load;
- :func:`cached_sources` -> which sources of a model are cached (no network, no torch);
- :func:`check_source` / :func:`check_cache_dir` -> ``--source`` / ``--cache-dir`` values;
- :func:`download_file` / :func:`verify_file` -> the resumable, checksummed download primitive.

See ``docs/weights.md`` for the cache layout, verification and offline use. Importing this
package imports neither torch, requests nor huggingface_hub.
"""
from .checksum import verify_file
from .http_download import download_file
from .resolve import (WeightsRequest, cached_sources, check_cache_dir, check_source,
                      effective_source, resolve_weights)

__all__ = ["WeightsRequest", "cached_sources", "check_cache_dir", "check_source",
           "download_file", "effective_source", "resolve_weights", "verify_file"]
