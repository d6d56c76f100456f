"""The `railyard` command: build or upload the default image, collect garbage a crashed run left, list or
delete the warm pool's checkpoints."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, RailyardError

log = logging.getLogger("railyard")

CHANNELS = ("alpha", "beta", "stable", "lts")
# The update suite offers the next version and the one after it.
UPDATE_STEPS = (1, 2)


def _image_prune(args: argparse.Namespace) -> int:
    from harness.warm import CheckpointStore
    from images.build import default_cache_dir
    from images.prune import prune

    cache_dir = default_cache_dir()
    found = prune(cache_dir, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for stale in found:
        print(f"{verb} {stale.path} ({stale.why})")
    if not args.dry_run:
        store = Path(args.checkpoint_dir) if args.checkpoint_dir else cache_dir / "checkpoints"
        for path in CheckpointStore(store).prune():
            print(f"removed checkpoint {path}")
    print(f"{len(found)} stale file(s) in {cache_dir}")
    return 0


def _image_build(args: argparse.Namespace) -> int:
    from images.build import build_image, ensure_image, update_payload

    channels = list(CHANNELS) if args.all else (args.channel or ["stable"])
    for channel in channels:
        start = time.monotonic()
        if args.force:
            built = build_image(channel=channel, force=True, progress=print)
        else:
            built = ensure_image(channel=channel, progress=print)
        print(f"{channel}: {built.path} ({time.monotonic() - start:.1f} s)")
        if args.payloads or args.all:
            for steps in UPDATE_STEPS:
                start = time.monotonic()
                version, path = update_payload(channel, steps, progress=print)
                print(f"{channel}: update payload {version}: {path} ({time.monotonic() - start:.1f} s)")
    return 0


DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in `90`, `90s`, `30m`, `6h` or `2d`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (use e.g. 90s, 30m, 6h, 2d)")
    return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]


def _platform_options(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"func", "command", "image_command", "verbose", "platform"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def _gc(args: argparse.Namespace) -> int:
    from harness.registry import load_platform
    from platforms.base import GarbageRequest

    request = GarbageRequest(
        options=_platform_options(args),
        older_than=args.older_than,
        output_root=Path(args.output_root),
        dry_run=args.dry_run,
    )
    lines = load_platform(args.platform).collect_garbage(request)
    for line in lines:
        print(line)
    print(f"{args.platform}: {len(lines)} leftover(s) {'found' if args.dry_run else 'removed'}")
    return 0


def _checkpoints(args: argparse.Namespace) -> int:
    from harness.warm import CheckpointStore
    from images.build import default_cache_dir

    store = CheckpointStore(Path(args.dir) if args.dir else default_cache_dir() / "checkpoints")
    if args.clear:
        for path in store.clear():
            print(f"removed {path}")
        return 0
    entries = store.entries()
    now = time.time()
    for info in entries:
        kind = info.about.get("kind", "?")
        who = info.about.get("made by") or info.about.get("made for") or info.about.get("test") or ""
        age = (now - info.last_used) / 3600
        print(f"{info.key}  {kind:9}  {info.size_bytes / 2**20:7.1f} MiB  used {age:5.1f} h ago  {who}")
    total = sum(i.size_bytes for i in entries) / 2**20
    print(f"{len(entries)} checkpoint(s), {total:.1f} MiB in {store.root}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from harness import listing

    pytest_args = [a for a in args.pytest_args if a != "--"]
    if not any(not a.startswith("-") for a in pytest_args):
        pytest_args += listing.default_paths()
    print(listing.run(pytest_args, as_json=args.json))
    return 0


def _report_merge(args: argparse.Namespace) -> int:
    from harness import reports

    report = reports.merge([Path(d) for d in args.dirs], Path(args.output))
    counts = report.summary()
    said = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n)
    print(
        f"{len(report.tests)} tests: {said or 'none'} -> {args.output} (report.json, report.tap, junit.xml)"
    )
    if not args.gate:
        return 0
    return report.exit_code(1 if report.result == reports.FAIL else 0)


def _spawn(args: argparse.Namespace) -> int:
    from harness import spawn

    settings = spawn.SpawnSettings(
        count=args.count,
        ignition=args.ignition,
        butane=args.butane,
        ssh=args.ssh or args.command is not None,
        keep=args.keep,
        command=args.command,
    )
    pytest_args = ["--platform", args.platform]
    for flag, value in (("--channel", args.channel), ("--image", args.image), ("--distro", args.distro)):
        if value:
            pytest_args += [flag, value]
    pytest_args += [a for a in args.pytest_args if a != "--"]
    return spawn.run(settings, pytest_args)


def _image_fetch(args: argparse.Namespace) -> int:
    from harness.fetch import FetchRequest, fetch_release

    request = FetchRequest(
        channel=args.channel,
        distro=args.distro,
        version=args.version,
        board=args.board,
        firmware=args.firmware,
        release_url=args.release_url,
        signing_key=Path(args.signing_key) if args.signing_key else None,
    )
    image = fetch_release(request)
    meta = image.metadata
    print(f"{meta.distro} {meta.channel} {meta.version} ({meta.firmware}): {image.path}")
    return 0


def _image_upload(args: argparse.Namespace) -> int:
    from harness.registry import load_platform
    from images.build import ensure_image
    from images.metadata import read_metadata
    from platforms.base import UploadRequest

    if args.image:
        image = Path(args.image)
        if not image.is_file():
            raise ConfigError(f"--image {image}: no such file")
    else:
        image = ensure_image(channel=args.channel, progress=print).path
    meta = read_metadata(image)
    name = args.name or (f"railyard-{meta.channel}-{meta.version}" if meta else image.stem)
    tags = {"os": meta.os_id, "version": meta.version, "channel": meta.channel} if meta else {}
    request = UploadRequest(options=_platform_options(args), image=image, name=name, metadata=tags)
    print(load_platform(args.platform).upload_image(request))
    return 0


def _platform_in(argv: Sequence[str]) -> str | None:
    """The value of --platform in a command line, before the full parse (it decides which options exist)."""
    for i, arg in enumerate(argv):
        if arg == "--platform" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--platform="):
            return arg.partition("=")[2]
    return None


def parser(platform: str | None = None) -> argparse.ArgumentParser:
    """The command line; `platform` adds that platform's own options to `gc` and `image upload`."""
    p = argparse.ArgumentParser(prog="railyard", description="Railyard: VM-based integration tests")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    image = sub.add_parser(
        "image", help="the default test image, and released images to fetch"
    ).add_subparsers(dest="image_command", required=True)
    build = image.add_parser("build", help="build (or reuse from cache) the default image")
    build.add_argument("--channel", action="append", choices=CHANNELS, help="channel to build (repeatable)")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    build.add_argument(
        "--payloads", action="store_true", help="also build the update payloads of the next two versions"
    )
    build.add_argument("--all", action="store_true", help="every channel, with its update payloads")
    build.set_defaults(func=_image_build)

    prune = image.add_parser(
        "prune",
        help="delete cached images, payloads and build stages of other builds (and their checkpoints)",
        description="Delete what of the image cache the current builder can never use again: images, update "
        "payloads, root file systems and initramfs files whose cache key is not the current one (built by "
        "an older recipe, another checkout or another signing key), then the warm pool's checkpoints of "
        "images that are gone. A checkout that needs one again builds it again.",
    )
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    prune.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="the warm pool's checkpoints to prune, as given to pytest --checkpoint-dir "
        "(default: ~/.cache/railyard/checkpoints)",
    )
    prune.set_defaults(func=_image_prune)

    upload = image.add_parser("upload", help="upload an image to a cloud platform and register it")
    upload.add_argument("--platform", required=True, help="where to upload (aws, azure)")
    upload.add_argument("--image", help="the disk image to upload (default: the default image of --channel)")
    upload.add_argument("--channel", default="stable", choices=CHANNELS, help="channel of the default image")
    upload.add_argument("--name", help="name of the registered image (default: railyard-<channel>-<version>)")
    upload.set_defaults(func=_image_upload)

    from harness.fetch.release import BOARDS, DEFAULT_RELEASE_URL, DISTROS, FIRMWARES

    fetch = image.add_parser(
        "fetch",
        help="download a released image, verify its signature and digests, and cache it for the plugin",
        description="Download a release's QEMU image (resuming a download cut short), check its detached GPG "
        "signature with gpgv and its DIGESTS, decompress it and cache it under the user's cache "
        "($XDG_CACHE_HOME/railyard/fetched), where `pytest --distro=flatcar --channel CH` finds it without "
        "--image. Example: railyard image fetch --distro flatcar --channel stable --firmware bios",
    )
    fetch.add_argument("--distro", required=True, choices=DISTROS, help="the OS whose release to fetch")
    fetch.add_argument("--channel", required=True, choices=CHANNELS, help="release channel")
    fetch.add_argument("--version", default="current", help="release version, or current (the default)")
    fetch.add_argument("--board", default="amd64-usr", choices=BOARDS, help="board (default: amd64-usr)")
    fetch.add_argument(
        "--firmware", default="bios", choices=FIRMWARES, help="image for this firmware (default: bios)"
    )
    fetch.add_argument(
        "--release-url", default=DEFAULT_RELEASE_URL, metavar="TEMPLATE",
        help=f"release server or mirror, naming the channel as {{channel}} (default: {DEFAULT_RELEASE_URL})",
    )  # fmt: skip
    fetch.add_argument(
        "--signing-key", metavar="FILE",
        help="the OpenPGP key that signs the images, trusted as given (a mirror's own); default: Flatcar's "
        "official key, downloaded and checked against its pinned fingerprint",
    )  # fmt: skip
    fetch.set_defaults(func=_image_fetch)

    gc = sub.add_parser("gc", help="delete what crashed runs left behind")
    gc.add_argument("--platform", default="qemu", help="the platform to clean up (default: qemu)")
    gc.add_argument(
        "--older-than", type=parse_duration, default=None, metavar="DURATION",
        help="only what was created at least this long ago, e.g. 6h (cloud platforms default to 6h)",
    )  # fmt: skip
    gc.add_argument(
        "--output-root", default="_railyard", help="where runs put their machines (default: _railyard)"
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    gc.set_defaults(func=_gc)

    checkpoints = sub.add_parser("checkpoints", help="list (or delete) the warm pool's saved checkpoints")
    checkpoints.add_argument("--dir", help="where they are (default: ~/.cache/railyard/checkpoints)")
    checkpoints.add_argument("--clear", action="store_true", help="delete them all")
    checkpoints.set_defaults(func=_checkpoints)

    report = sub.add_parser("report", help="the reports runs write").add_subparsers(
        dest="report_command", required=True
    )
    merge = report.add_parser(
        "merge",
        help="merge the reports of several runs (shards, matrix jobs) into one",
        description="Merge report.json, report.tap, report.html and junit.xml of the runs' output folders "
        "into --output.",
    )
    merge.add_argument("dirs", nargs="+", metavar="DIR", help="a run's output folder (or its reports/)")
    merge.add_argument("--output", required=True, metavar="DIR", help="where the merged reports go")
    merge.add_argument(
        "--gate",
        action="store_true",
        help="exit as the merged run would: 1 if a test failed, 10 if only the infrastructure did, 11 if only "
        "warn-only tests did",
    )
    merge.set_defaults(func=_report_merge)

    spawn = sub.add_parser(
        "spawn",
        help="boot machines for a person: print how to reach them, --ssh into the first; destroyed on exit",
        description="Boot N machines (provisioned as a test's are) and print how to reach each (ssh command, "
        "console path). With --ssh, open an interactive SSH session to the first and destroy everything when "
        "it ends; without, wait for Ctrl-C. --keep leaves them running and says how to delete them. Options "
        "after -- go to pytest (platform options, --warm, --memory...). Example: railyard spawn --butane "
        "web.bu --channel beta --ssh",
    )
    spawn.add_argument("--platform", default="qemu", help="where the machines boot (default: qemu)")
    spawn.add_argument("-n", "--count", type=int, default=1, help="how many machines (default: 1)")
    spawn.add_argument("--ignition", metavar="FILE", help="an Ignition config (JSON) for the machines")
    spawn.add_argument("--butane", metavar="FILE", help="a Butane config for the machines")
    spawn.add_argument("--channel", help="release channel of the default image (default: stable)")
    spawn.add_argument("--image", metavar="PATH", help="the image to boot (default: the default image)")
    spawn.add_argument("--distro", help="the OS of --image when its metadata does not say")
    spawn.add_argument(
        "--ssh", action="store_true", help="open an interactive SSH session to the first machine"
    )
    spawn.add_argument("--command", help="run this in the first machine over SSH (implies --ssh), then end")
    spawn.add_argument("--keep", action="store_true", help="leave the machines running when spawn ends")
    spawn.add_argument("pytest_args", nargs=argparse.REMAINDER, help="pytest options (after --)")
    spawn.set_defaults(func=_spawn)

    listing = sub.add_parser(
        "list",
        help="the suites' tests with their markers resolved (what `pytest ARGS` would run; nothing boots)",
        description="List the tests `pytest ARGS` would run (default ARGS: suites/), with their markers "
        "resolved: platforms, channels, distros, cluster size, capabilities, minimum version, tags, machine "
        "options. Example: railyard list --json -- --platform libvirt --channel alpha suites/",
    )
    listing.add_argument("--json", action="store_true", help="print JSON (one object per test function)")
    listing.add_argument("pytest_args", nargs=argparse.REMAINDER, help="pytest's arguments (after --)")
    listing.set_defaults(func=_list)

    if platform is not None:
        from harness.registry import load_platform

        cls = load_platform(platform)
        for command in (gc, upload):
            cls.add_options(command.add_argument_group(f"{platform} options"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        p = parser(_platform_in(argv))
    except RailyardError as exc:
        print(f"railyard: {exc}", file=sys.stderr)
        return 2
    args = p.parse_args(argv)
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
