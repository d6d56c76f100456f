"""The `railyard` command: build the default image, collect garbage a crashed run left."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from harness.errors import RailyardError

log = logging.getLogger("railyard")

CHANNELS = ("alpha", "beta", "stable", "lts")


def _image_build(args: argparse.Namespace) -> int:
    from images.build import build_image, ensure_image

    for channel in args.channel or ["stable"]:
        start = time.monotonic()
        if args.force:
            built = build_image(channel=channel, force=True, progress=print)
        else:
            built = ensure_image(channel=channel, progress=print)
        print(f"{channel}: {built.path} ({time.monotonic() - start:.1f} s)")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from platforms.qemu import gc_stale_runtime

    root = Path(args.output_root)
    removed = gc_stale_runtime(root) if root.exists() else []
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} stale machine(s) removed under {root}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="railyard", description="Railyard: VM-based integration tests")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    image = sub.add_parser("image", help="the default test image").add_subparsers(
        dest="image_command", required=True
    )
    build = image.add_parser("build", help="build (or reuse from cache) the default image")
    build.add_argument("--channel", action="append", choices=CHANNELS, help="channel to build (repeatable)")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    build.set_defaults(func=_image_build)

    gc = sub.add_parser("gc", help="delete what crashed runs left behind")
    gc.add_argument("--platform", default="qemu", choices=["qemu"])
    gc.add_argument(
        "--output-root", default="_railyard", help="where runs put their machines (default: _railyard)"
    )
    gc.set_defaults(func=_gc)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s"
    )
    try:
        return int(args.func(args))
    except RailyardError as exc:
        print(f"railyard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
