"""The Ignition configs the suites give in markers are the same on every run: the warm pool keys a booted
checkpoint by the config (harness.warm), so a config that changes from run to run (a key made at import, a
file system holding the time it was built) boots its machine anew every run instead of restoring it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DUMP = """
import hashlib, importlib, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/suites"]
digests = {}
for name in sys.argv[2:]:
    module = importlib.import_module(name)
    marks = module.__dict__.get("pytestmark", [])
    marks = list(marks) if isinstance(marks, list) else [marks]
    for value in vars(module).values():
        if callable(value) and getattr(value, "__name__", "").startswith("test_"):
            marks += getattr(value, "pytestmark", [])
    given = [[m.name, m.args, m.kwargs] for m in marks if m.name in ("ignition", "butane")]
    if given:
        text = json.dumps(given, sort_keys=True, default=repr)
        digests[name] = hashlib.sha256(text.encode()).hexdigest()
print(json.dumps(digests))
"""


def config_digests(cache: Path) -> dict[str, str]:
    modules = sorted(path.stem for path in (ROOT / "suites").glob("test_*.py"))
    done = subprocess.run(
        [sys.executable, "-c", DUMP, str(ROOT), *modules],
        check=True,
        capture_output=True,
        text=True,
        env={"XDG_CACHE_HOME": str(cache), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        cwd=ROOT,
    )
    digests: dict[str, str] = json.loads(done.stdout)
    return digests


def test_the_suites_configs_are_the_same_in_a_later_second(tmp_path: Path) -> None:
    first = config_digests(tmp_path / "cache")
    assert {"test_ignition", "test_ssh", "test_sysext", "test_storage"} <= first.keys()
    started = int(time.time())
    while int(time.time()) == started:  # file times have whole seconds in a small ext4 image
        time.sleep(0.05)
    assert config_digests(tmp_path / "cache") == first
