"""A release's `.DIGESTS` file: sections headed `# <KIND> HASH`, each line `<hex>  <file name>`.

Flatcar's list MD5, SHA1 and SHA512 (other kinds may follow). Every kind listed for the file that Python
knows is checked, and SHA512 must be among them: MD5 and SHA1 alone prove nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from harness.errors import FetchError

REQUIRED_KIND = "sha512"
_HEADER = re.compile(r"^#\s*([A-Za-z0-9_-]+)\s+HASH\s*$", re.IGNORECASE)
_LINE = re.compile(r"^([0-9a-fA-F]+)\s+\*?(\S+)\s*$")
CHUNK = 1 << 20


def parse_digests(text: str) -> dict[str, dict[str, str]]:
    """{file name: {kind (lower case, as hashlib names it): hex digest}}."""
    found: dict[str, dict[str, str]] = {}
    kind: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        header = _HEADER.match(line)
        if header:
            kind = header.group(1).lower().replace("-", "")
            continue
        entry = _LINE.match(line)
        if entry and kind is not None:
            found.setdefault(Path(entry.group(2)).name, {})[kind] = entry.group(1).lower()
    return found


def _hashes(path: Path, kinds: Iterable[str]) -> dict[str, str]:
    hashers = {kind: hashlib.new(kind) for kind in kinds}
    with path.open("rb") as data:
        while chunk := data.read(CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {kind: hasher.hexdigest() for kind, hasher in hashers.items()}


def check_digests(path: Path, name: str, digests_text: str) -> list[str]:
    """Check `path` (published as `name`) against a DIGESTS file; the kinds checked. FetchError otherwise."""
    listed = parse_digests(digests_text).get(name)
    if not listed:
        raise FetchError(f"{name}.DIGESTS lists no digest of {name}")
    if REQUIRED_KIND not in listed:
        raise FetchError(
            f"{name}.DIGESTS has no SHA512 digest of {name} (only {', '.join(sorted(listed))}): refusing it"
        )
    known = sorted(kind for kind in listed if kind in hashlib.algorithms_available)
    actual = _hashes(path, known)
    wrong = [kind for kind in known if actual[kind] != listed[kind]]
    if wrong:
        raise FetchError(
            f"{name} does not match its DIGESTS ({', '.join(k.upper() for k in wrong)} differ): the download "
            "is damaged or was tampered with; nothing was cached"
        )
    return known
