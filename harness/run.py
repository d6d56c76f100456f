"""Run-wide state: run id, output directory, platform, SSH key, machine shape and boot admission."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import secrets
import shutil
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from harness import shape
from harness.acceleration import Acceleration, Timeouts
from harness.admission import BootSlots
from harness.distros import get_distro
from harness.errors import RailyardError
from harness.image_choice import FETCHED_DISTROS, ImageChoice, check_image, resolve_image
from harness.registry import load_platform
from harness.ssh import KeyPair, generate_keypair, shared_keypair
from harness.warm import CheckpointStore
from images.build import default_cache_dir
from images.metadata import read_metadata
from platforms.base import GarbageRequest, Platform, PlatformContext

log = logging.getLogger(__name__)


# Under TCG a machine waits for others to end: as long as a long test can take (several update cycles).
LIFETIME_SLOT_WAIT = 4 * 3600.0
# A test that holds a machine and asks for another waits this long before it goes ahead without a slot.
OVERCOMMIT_AFTER = 300.0


def _opt(config: pytest.Config, name: str) -> Any:
    return config.getoption(name)


def new_run_id() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class Run:
    """Created once per pytest process (controller and each xdist worker share the run id and output dir)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.platform_name: str = _opt(config, "railyard_platform")
        self.platform_cls: type[Platform] = load_platform(self.platform_name)
        self.accel: Acceleration = self.platform_cls.acceleration(_opt(config, "qemu_accel"))
        self.timeouts: Timeouts = self.platform_cls.default_timeouts(self.accel, _opt(config, "boot_timeout"))
        options = vars(config.option)
        shape.check_shape_options(options)
        self.platform_cls.check_shape(shape.given_shape_options(options))
        self.keep_on_failure: bool = _opt(config, "keep_on_failure")
        self.keep_artifacts: bool = _opt(config, "keep_artifacts")
        self.warm_mode: str = _opt(config, "warm")
        self.run_channels: list[str] | None = _opt(config, "railyard_channels")
        explicit = _opt(config, "railyard_image")
        self.explicit_image: Path | None = check_image(Path(explicit)) if explicit else None
        self.explicit_distro: str | None = _opt(config, "railyard_distro")
        if self.explicit_distro:
            get_distro(self.explicit_distro)
        self.explicit_metadata = read_metadata(self.explicit_image) if self.explicit_image else None

        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None:
            self.run_id = str(workerinput["railyard_run_id"])
            self.output_dir = Path(workerinput["railyard_output_dir"])
        else:
            self.run_id = new_run_id()
            given = _opt(config, "output_dir")
            if given:
                self.output_dir = Path(given).absolute()
            else:
                base = Path(config.invocation_params.dir) / "_railyard"
                self.output_dir = base / f"{self.platform_name}-{self.run_id}"
        self.worker = workerinput["workerid"] if workerinput is not None else "main"
        self._images: dict[str, ImageChoice] = {}
        self._image_lock = threading.Lock()
        self._platform: Platform | None = None
        self._platform_lock = threading.Lock()  # machines of one factory boot from several threads
        self.kept_machines: list[str] = []
        self._output_prepared = False
        self.cleanup_error: str | None = None

    def prepare_output_dir(self) -> None:
        """Create the output dir and point `<platform>-latest` at it, once per process.

        Called when the run first needs it (a platform to boot on, an SSH key), never at start-up: a run
        that boots nothing (`--co`, `--help`, every test skipped) leaves `_railyard/` as it was.
        """
        if self._output_prepared:
            return
        self._output_prepared = True
        self.output_dir.mkdir(parents=True, exist_ok=True)
        latest = self.output_dir.parent / f"{self.platform_name}-latest"
        if latest.is_symlink() and os.readlink(latest) == self.output_dir.name:
            return
        temporary = latest.with_name(f".{latest.name}.{os.getpid()}")
        try:
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(self.output_dir.name)
            os.replace(temporary, latest)  # atomic: readers see the old run or this one
        except OSError as exc:
            log.debug("could not update %s: %s", latest, exc)
            temporary.unlink(missing_ok=True)

    # -- images ---------------------------------------------------------------------------------------

    @property
    def default_channel(self) -> str:
        if self.explicit_metadata and self.explicit_metadata.channel:
            return self.explicit_metadata.channel
        return "stable"

    @property
    def any_channel(self) -> bool:
        """Whether an image of any channel can be had (the default image is built per channel; released
        images only as fetched, so those runs test the channels asked for)."""
        return self.explicit_image is None and self.explicit_distro not in FETCHED_DISTROS

    def check_fetched_images(self) -> None:
        """Before anything boots: a fetched image for each channel the run tests (ConfigError otherwise)."""
        if self.explicit_image is not None or self.explicit_distro not in FETCHED_DISTROS:
            return
        if not self.platform_cls.uses_local_image:
            return
        for channel in self.run_channels or [self.default_channel]:
            self.image_for(channel)

    def image_for(self, channel: str) -> ImageChoice:
        """The image machines of `channel` boot (resolved once per channel; the default image is built)."""
        with self._image_lock:
            if channel not in self._images:
                self._images[channel] = resolve_image(
                    channel,
                    explicit=self.explicit_image,
                    metadata=self.explicit_metadata,
                    distro=self.explicit_distro,
                    local=self.platform_cls.uses_local_image,
                    firmware=self.config.getoption("machine_firmware", None),
                )
            return self._images[channel]

    # -- platform, key, admission ----------------------------------------------------------------------

    @property
    def platform(self) -> Platform:
        with self._platform_lock:
            if self._platform is None:
                self.prepare_output_dir()
                options = {k: v for k, v in vars(self.config.option).items()}
                ctx = PlatformContext(
                    run_id=self.run_id,
                    output_dir=self.output_dir,
                    accel=self.accel,
                    timeouts=self.timeouts,
                    options=options,
                )
                platform = self.platform_cls(ctx)
                platform.validate()
                self._platform = platform
            return self._platform

    @cached_property
    def checkpoints(self) -> CheckpointStore | None:
        """Where booted checkpoints are kept (the warm pool), or None when machines all boot cold
        (`--warm=off`, or a platform without checkpoints)."""
        if self.warm_mode == "off" or not self.platform_cls.checkpoints:
            return None
        given = _opt(self.config, "checkpoint_dir")
        store = CheckpointStore(Path(given).absolute() if given else default_cache_dir() / "checkpoints")
        for removed in store.prune():
            log.info("removed unused checkpoint %s", removed)
        return store

    @cached_property
    def keypair(self) -> KeyPair:
        """The SSH key the harness logs in with: the host's shared key when machines are saved in checkpoints
        (a checkpoint holds the key its machine was given), else a key of this run and worker."""
        if self.checkpoints is not None:
            return shared_keypair(default_cache_dir() / "ssh")
        self.prepare_output_dir()
        directory = self.output_dir / "keys" / self.worker
        directory.mkdir(parents=True, exist_ok=True)
        return generate_keypair(directory)

    @property
    def machine_cpus(self) -> int:
        """vCPUs per machine: --cpus, else 2 under KVM and 1 under TCG. Under TCG each machine is
        admitted to one host core: more vCPU threads than cores let the host deschedule a vCPU that holds
        a lock while another spins on it (soft lockups), and gain nothing when every core already runs a VM."""
        if not self.platform_cls.local:
            return shape.KVM_CPUS  # a cloud machine's size is its instance type
        return shape.cpus(vars(self.config.option), emulated=self.accel.name == "tcg")

    @property
    def machine_memory_mib(self) -> int:
        """Guest memory per machine: --memory, else the default."""
        return shape.memory_mib(vars(self.config.option))

    def memory_for(self, wanted: int | None) -> int:
        """Guest memory of a test's machines: its `memory` marker (`wanted`), else the run's."""
        return shape.memory_mib(vars(self.config.option), wanted)

    def machine_firmware(self, image: ImageChoice, wanted: str | None = None) -> str:
        """The test's `firmware` marker (`wanted`), else --firmware, else what the image declares, else UEFI."""
        firmware = image.metadata.firmware if image.metadata else None
        return shape.firmware(vars(self.config.option), firmware, wanted)

    @property
    def slots_for_life(self) -> bool:
        """Whether a machine holds its admission slot for its whole life, not only while it boots: so on
        this host under TCG, where a running guest costs as much CPU as a booting one."""
        return self.platform_cls.local and self.accel.name == "tcg"

    @property
    def slot_timeout(self) -> float:
        """How long a machine may wait for a slot: a boot's worth, or under TCG other tests' whole runs."""
        return LIFETIME_SLOT_WAIT if self.slots_for_life else self.timeouts.boot * 4

    @cached_property
    def boot_slots(self) -> BootSlots:
        cores = os.cpu_count() or 1
        count = cores if self.platform_cls.local else 64
        return BootSlots(
            count,
            memory_mib=self.machine_memory_mib,
            overcommit_after=OVERCOMMIT_AFTER,
        )

    def close(self) -> None:
        """End the run: destroy its machines and resources. Returns nothing; a cleanup that left something
        behind is logged as an error and kept in `cleanup_error` for the caller to report."""
        try:
            if self._platform is not None:
                platform, self._platform = self._platform, None
                platform.close()
        except RailyardError as exc:
            self.cleanup_error = str(exc)
            log.error("%s", exc)
        finally:
            if self.worker == "main" and self.output_dir.is_dir():
                self._collect_leftovers()
        if "keypair" in self.__dict__ and not self.kept_machines:
            shutil.rmtree(self.output_dir / "keys" / self.worker, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.output_dir / "keys").rmdir()

    def _collect_leftovers(self) -> None:
        """Machines of this run's killed workers (their QEMU died with them; their disks did not)."""
        request = GarbageRequest(
            options=dict(vars(self.config.option)), older_than=None, output_root=self.output_dir
        )
        try:
            for line in self.platform_cls.collect_leftovers(request):
                log.warning("left by a killed process of this run: %s", line)
        except RailyardError as exc:
            log.warning("could not collect what killed processes of this run left: %s", exc)
