"""Host tools the image build runs, with errors that say what to install or what failed."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.errors import ImageError

log = logging.getLogger(__name__)

# Tool name -> Debian package that provides it.
HOST_TOOLS: Mapping[str, str] = {
    "mmdebstrap": "mmdebstrap",
    "tar": "tar",
    "chroot": "coreutils",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
    "dd": "coreutils",
    "qemu-img": "qemu-utils",
    "zstd": "zstd",
}

OUTPUT_TAIL_LINES = 40


def missing_tools(names: Sequence[str] | None = None) -> dict[str, str]:
    """Tools (name -> package) that are not on PATH."""
    wanted = list(HOST_TOOLS) if names is None else list(names)
    return {n: HOST_TOOLS.get(n, n) for n in wanted if shutil.which(n) is None}


def require_tools(names: Sequence[str] | None = None) -> None:
    missing = missing_tools(names)
    if missing:
        packages = sorted(set(missing.values()))
        raise ImageError(
            f"image build needs host tools that are missing: {', '.join(sorted(missing))}; "
            f"install them with: apt-get install {' '.join(packages)}"
        )


def require_root() -> None:
    if os.geteuid() != 0:
        raise ImageError(
            "building the default image needs root (mmdebstrap, chroot and file ownership "
            "in the file systems); run the build as root or point the run at a prebuilt image"
        )


def require_free_space(path: Path, needed_bytes: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise ImageError(
            f"not enough free disk space in {path} to build the image: "
            f"{free / 2**30:.1f} GiB free, {needed_bytes / 2**30:.1f} GiB needed; "
            "free some space or set XDG_CACHE_HOME to a larger file system"
        )


def tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run(
    command: Sequence[str | Path],
    stage: str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> str:
    """Run a command; return its combined output; raise ImageError with the output's tail on failure."""
    argv = [str(c) for c in command]
    log.debug("%s: %s", stage, " ".join(argv))
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=full_env,
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        package = HOST_TOOLS.get(argv[0], argv[0])
        raise ImageError(f"{stage}: {argv[0]} not found; install it with: apt-get install {package}") from exc
    output = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise ImageError(
            f"{stage} failed: {' '.join(argv[:6])}{' ...' if len(argv) > 6 else ''} "
            f"exited with status {proc.returncode}\n--- last lines of output ---\n{tail(output)}"
        )
    return output
