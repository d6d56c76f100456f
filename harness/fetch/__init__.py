"""`railyard image fetch`: released OS images downloaded, verified (GPG signature, DIGESTS) and cached.

    railyard image fetch --distro flatcar --channel stable --firmware bios

`release` says where a release's files are, `download` fetches them (resuming), `signature` checks their
detached signatures with gpgv, `digests` their DIGESTS files, `cache` where verified images live and how
the plugin finds them, and `fetch` puts the steps together.
"""

from harness.fetch.cache import FetchedImage, fetched_cache_dir, find_fetched
from harness.fetch.fetch import FetchRequest, fetch_release

__all__ = ["FetchRequest", "FetchedImage", "fetch_release", "fetched_cache_dir", "find_fetched"]
