"""A release server for the fetch tests: a Flatcar-shaped release tree on 127.0.0.1, signed with a key
the tests make with gpg, served with HTTP ranges (and cut short on request)."""

from __future__ import annotations

import bz2
import hashlib
import random
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NAME = "Railyard Test Release <release@example.invalid>"
PAST = "20200101T000000"


def gpg(home: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"gpg {' '.join(args)}: {result.stderr}"
    return result.stdout


@dataclass
class SigningKeys:
    """A primary key (certification only) with three signing subkeys: one good, one expired since 2020,
    one revoked. `public` is the armored public key file, with all three."""

    home: Path
    primary: str
    good: str
    expired: str
    revoked: str
    public: Path

    def sign(self, subkey: str, path: Path, sig: Path) -> None:
        faked = ["--faked-system-time", f"{PAST[:8]}T060000"] if subkey == self.expired else []
        gpg(self.home, *faked, "--local-user", f"{subkey}!", "--detach-sign", "--output", str(sig), str(path))


def _subkeys(home: Path) -> list[str]:
    listing = gpg(home, "--with-colons", "--fixed-list-mode", "--list-keys")
    found, after_sub = [], False
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] == "sub":
            after_sub = True
        elif fields[0] == "fpr" and after_sub:
            found.append(fields[9])
            after_sub = False
    return found


def make_signing_keys(home: Path) -> SigningKeys:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg(home, "--faked-system-time", PAST, "--quick-gen-key", NAME, "ed25519", "cert", "never")
    primary = gpg(home, "--with-colons", "--list-keys").split("fpr:::::::::")[1].split(":")[0]
    gpg(
        home, "--faked-system-time", f"{PAST[:8]}T000100", "--quick-add-key", primary, "ed25519", "sign", "1d"
    )
    gpg(home, "--quick-add-key", primary, "ed25519", "sign", "1y")
    gpg(home, "--quick-add-key", primary, "ed25519", "sign", "1y")
    expired, good, revoked = _subkeys(home)
    keys = SigningKeys(home, primary, good, expired, revoked, home.parent / "release-key.asc")
    return keys


def revoke_subkey(keys: SigningKeys) -> None:
    """Revoke the third subkey (after it signed what it signs) and write the public key file."""
    answers = "key 3\nrevkey\ny\n0\n\ny\nsave\n"
    gpg(keys.home, "--command-fd", "0", "--status-fd", "2", "--edit-key", keys.primary, stdin=answers)
    keys.public.write_text(gpg(keys.home, "--armor", "--export", keys.primary))


def stop_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)


def digests_text(path: Path, name: str, kinds: tuple[str, ...] = ("md5", "sha1", "sha512")) -> str:
    data = path.read_bytes()
    return "".join(f"# {k.upper()} HASH\n{hashlib.new(k, data).hexdigest()}  {name}\n" for k in kinds)


def stand_in_image(size: int = 1 << 21, seed: int = 14) -> bytes:
    """A small disk image: a qcow2 magic and bytes bzip2 cannot shrink much."""
    return b"QFI\xfb" + random.Random(seed).randbytes(size - 4)


@dataclass
class Mirror:
    """The release tree under `root`, served at `url`; `cut_after[path]`: send that many bytes, then hang up."""

    root: Path
    server: ThreadingHTTPServer | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def template(self) -> str:
        return f"http://127.0.0.1:{self.port}/{{channel}}/"

    def folder(self, channel: str, version: str, board: str = "amd64-usr") -> Path:
        path = self.root / channel / board / version
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(
        self,
        keys: SigningKeys,
        channel: str,
        version: str,
        files: dict[str, bytes],
        *,
        compress: bool,
        subkey: str | None = None,
    ) -> list[Path]:
        """Publish `files` (name -> content) in the version's folder and in `current`; the paths served."""
        served: list[Path] = []
        for folder in (self.folder(channel, version), self.folder(channel, "current")):
            (folder / "version.txt").write_text(
                f"FLATCAR_VERSION={version}\nFLATCAR_VERSION_ID={version}\nFLATCAR_BUILD={version.split('.')[0]}\n"
            )
            for name, content in files.items():
                published = name + ".bz2" if compress else name
                path = folder / published
                path.write_bytes(bz2.compress(content) if compress else content)
                keys.sign(subkey or keys.good, path, folder / (published + ".sig"))
                (folder / (published + ".DIGESTS")).write_text(digests_text(path, published))
                served.append(path)
        return served

    def start(self) -> Mirror:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                mirror.requests.append((self.path, self.headers.get("Range")))
                path = mirror.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                wanted = self.headers.get("Range")
                if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[len("bytes=") : -1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = mirror.cut_after.get(self.path)
                body = data[start:] if cut is None else data[start:cut]
                self.wfile.write(body)
                if cut is not None:
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
