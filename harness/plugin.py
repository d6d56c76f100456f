"""The pytest plugin: options, markers, per-channel parametrization, machine fixtures, console checks."""

from __future__ import annotations

import datetime
import functools
import logging
import platform as host_platform
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest

from harness import denylist, progress, reports, shard
from harness.acceleration import ACCEL_CHOICES
from harness.consolecheck import describe, split_starvation
from harness.distros import known_distros
from harness.errors import ConfigError, ConsoleCheckError, ImageError, PlatformError, WaitTimeout
from harness.factory import MachineFactory, safe_name
from harness.host_files import HostFiles
from harness.image_choice import ImageChoice
from harness.machine import GuestMachine
from harness.machine_options import kernel_args_refusal
from harness.ordering import longest_modules_first, module_seconds, read_durations, save_durations
from harness.registry import load_platform, platform_names
from harness.report_recorder import PROPERTY_DENYLIST, PROPERTY_FLAKY, PROPERTY_IMAGE_VERSION, ReportRecorder
from harness.run import Run
from harness.shape import add_shape_options
from harness.targets import (
    MARKERS,
    Requirements,
    Target,
    channels_for,
    distro_refusal,
    requirements_from_marks,
    skip_reason,
)
from harness.warm import WARM_MODES

log = logging.getLogger(__name__)

RUN_KEY = pytest.StashKey[Run]()
DENYLIST_KEY = pytest.StashKey[list[denylist.Entry]]()
SHARD_KEY = pytest.StashKey[shard.Shard | None]()
WARN_ONLY_KEY = pytest.StashKey[str]()
TARGET_KEY = pytest.StashKey[Target]()
"""The target a test (or a module's shared machine) resolved to: platform, channel, distro, image version."""
INFRASTRUCTURE_ERRORS = (PlatformError, ImageError)
"""Errors that say the platform or the image failed, not the OS under test (a BootError is the OS's)."""
REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
FACTORIES_KEY = pytest.StashKey[list[MachineFactory]]()
MODULE_MACHINE_FIXTURES = frozenset({"module_machine", "module_cluster"})
"""Fixtures of machines a module's tests share: the tests of one channel run in one xdist worker."""
MACHINE_FIXTURES = frozenset(
    {"machine", "cluster", "machine_factory", "railyard_target", "railyard_module_target"}
    | MODULE_MACHINE_FIXTURES
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("railyard", "Railyard: boot OS images and test them")
    group.addoption(
        "--platform",
        dest="railyard_platform",
        default="qemu",
        choices=platform_names(),
        help="where machines boot (default: qemu)",
    )
    group.addoption(
        "--image",
        dest="railyard_image",
        default=None,
        metavar="PATH",
        help="disk image to boot (qcow2 or raw); default: the built-in Railyard image",
    )
    group.addoption(
        "--distro",
        dest="railyard_distro",
        default=None,
        choices=known_distros(),
        help="OS of the image (default: from the image's metadata)",
    )
    group.addoption(
        "--channel",
        dest="railyard_channels",
        action="append",
        default=None,
        metavar="NAME",
        help="release channel to test (repeatable; default: the image's channel)",
    )
    group.addoption(
        "--qemu-accel",
        dest="qemu_accel",
        default="auto",
        choices=ACCEL_CHOICES,
        help="acceleration: auto (KVM only with vmx/svm and kvm_intel/kvm_amd), kvm or tcg",
    )
    add_shape_options(group)
    group.addoption(
        "--boot-timeout",
        dest="boot_timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long a boot may take until SSH answers (default scales with acceleration)",
    )
    group.addoption(
        "--output-dir",
        dest="output_dir",
        default=None,
        metavar="DIR",
        help="where artifacts go (default: _railyard/<platform>-<time>/)",
    )
    group.addoption(
        "--keep-on-failure",
        dest="keep_on_failure",
        action="store_true",
        help="leave a failing test's machines running and say how to ssh in",
    )
    group.addoption(
        "--warm",
        dest="warm",
        default="all",
        choices=WARM_MODES,
        help="restore machines from checkpoints where the platform can: all (the default: booted checkpoints, "
        "else first-boot ones), booted, firstboot, or off (every machine boots cold)",
    )
    group.addoption(
        "--checkpoint-dir",
        dest="checkpoint_dir",
        default=None,
        metavar="DIR",
        help="where booted checkpoints are kept and shared between runs (default: ~/.cache/railyard/checkpoints)",
    )
    group.addoption(
        "--keep-artifacts",
        dest="keep_artifacts",
        action="store_true",
        help="keep console, journal and Ignition artifacts of passing tests too",
    )
    group.addoption(
        "--denylist",
        dest="railyard_denylist",
        default=None,
        metavar="FILE",
        help="known failures (YAML, the shape of kola-denylist.yaml): matching tests are skipped with the "
        "tracker in the reason until their snooze date, or run warn-only",
    )
    group.addoption(
        "--rerun",
        dest="railyard_rerun",
        type=int,
        default=0,
        metavar="N",
        help="rerun a failed test up to N times (pytest-rerunfailures); one that passes on a rerun is reported "
        "as flaky",
    )
    group.addoption(
        "--progress",
        dest="railyard_progress",
        type=float,
        default=progress.DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="while the run waits (an image build, a boot, a reboot), say what for and how long, every SECONDS "
        f"(default {progress.DEFAULT_INTERVAL:.0f}; 0: never)",
    )
    group.addoption(
        "--tag",
        dest="railyard_tags",
        action="append",
        default=None,
        metavar="NAME",
        help="run only the tests tagged NAME (@pytest.mark.tags; repeatable: any of them)",
    )
    group.addoption(
        "--shard",
        dest="railyard_shard",
        default=None,
        metavar="I/N",
        help="run only shard I of N (counted from 1): a deterministic split in which a shared machine's tests "
        "stay together; the N shards together run every selected test once",
    )
    group.addoption(
        "--save-durations",
        dest="save_durations",
        action="store_true",
        help="after a run that passed, record how long each module took in its directory's durations.json "
        "(runs start the longest modules first)",
    )
    for name in platform_names():
        try:
            load_platform(name).add_options(group)
        except ConfigError:
            continue


# Fixtures of update tests (`omaha`, `update_machine`, ...), loaded with the plugin.
pytest_plugins = ["harness.update_fixtures"]


# How CI systems and terminals end a run besides Ctrl-C: each ends it the same way, with every machine destroyed.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _stop_on_signal(signum: int, frame: Any) -> None:
    """The first SIGTERM/SIGHUP interrupts the run like Ctrl-C (pytest then tears everything down); later
    ones are ignored, so that the cleanup they would cut short finishes. SIGKILL still ends it at once."""
    name = signal.Signals(signum).name
    for sig in STOP_SIGNALS:
        signal.signal(sig, _cleanup_in_progress)
    raise KeyboardInterrupt(f"{name} received: stopping the run and destroying its machines")


def _cleanup_in_progress(signum: int, frame: Any) -> None:
    log.warning("%s received while the run cleans up; ignored", signal.Signals(signum).name)


def _install_stop_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _stop_on_signal)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _install_stop_signals()
    for signature, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{signature}: {doc}")
    try:
        run = Run(config)
        if not config.option.collectonly and not config.option.help:
            run.check_fetched_images()  # a released image not fetched yet: one error, before any boot
        given = config.getoption("railyard_denylist", None)
        config.stash[DENYLIST_KEY] = denylist.load(Path(given)) if given else []
        given = config.getoption("railyard_shard", None)
        config.stash[SHARD_KEY] = shard.parse_shard(given) if given else None
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[RUN_KEY] = run
    workerinput = getattr(config, "workerinput", None)
    worker = str(workerinput.get("workerid", "")) if workerinput is not None else ""
    progress.configure(config.getoption("railyard_progress", progress.DEFAULT_INTERVAL), worker)
    rerun = config.getoption("railyard_rerun", 0)
    if rerun < 0:
        raise pytest.UsageError(f"--rerun {rerun}: a number of reruns is 0 or more")
    if rerun:
        config.option.reruns = rerun
    if workerinput is None and not config.getoption("collectonly", False) and not config.getoption("help"):
        # The run's reports: kola's report.json and TAP (harness.reports), and pytest's JUnit file.
        asked = config.getoption("xmlpath", None)
        junit = Path(asked) if asked else Path(tempfile.gettempdir()) / f"railyard-junit-{run.run_id}.xml"
        if not asked:
            config.option.xmlpath = str(junit)
        recorder = ReportRecorder(
            run.output_dir, run.platform_name, bool(config.getoption("output_dir")), junit, not asked
        )
        config.pluginmanager.register(recorder, "railyard-reports")
    if workerinput is not None and workerinput.get("railyard_loadgroup"):
        # A worker parses the command line anew (`-n 2` alone means `load` there): it must still name its
        # items by group, or the controller's loadgroup scheduler sees every test as a group of its own.
        config.option.loadgroup = True
    if config.getoption("save_durations", False) and workerinput is None:
        config.pluginmanager.register(_DurationRecorder(config), "railyard-durations")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(run), "railyard-xdist")
        # Tests sharing a module's machine must run in one worker: their parameters carry an xdist_group.
        if config.getoption("dist", "no") == "load":
            config.option.dist = "loadgroup"
            config.option.loadgroup = True
        # xdist's group scheduler would hand out the groups with most tests first (its scope reordering),
        # ahead of the single tests of the longest modules (each update test is a group of its own): the run
        # would end on them with one worker idle. Keep the longest-first order of the collection.
        if config.getoption("dist", "no") == "loadgroup":
            config.option.loadscopereorder = False


class _XdistHooks:
    def __init__(self, run: Run) -> None:
        self.run = run

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["railyard_run_id"] = self.run.run_id
        node.workerinput["railyard_output_dir"] = str(self.run.output_dir)
        node.workerinput["railyard_loadgroup"] = self.run.config.getoption("dist", "no") == "loadgroup"


class _DurationRecorder:
    """Adds up what each module's tests took (setup, call, teardown) and saves it when the run passed."""

    def __init__(self, config: pytest.Config) -> None:
        self.root = config.rootpath
        self.reports: list[tuple[Path, float]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.append(((self.root / report.location[0]).resolve(), report.duration))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus != 0 or not self.reports:
            return
        for path in save_durations(module_seconds(self.reports)):
            log.info("module durations saved to %s", path)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is not None:
        run.close()
        if run.cleanup_error:
            sys.stderr.write(f"railyard: {run.cleanup_error}\n")


def _requirements(node: pytest.Item | pytest.Collector | Any) -> Requirements:
    try:
        return requirements_from_marks(node.iter_markers())
    except ConfigError as exc:
        raise pytest.UsageError(f"{node.nodeid}: {exc}") from exc


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not MACHINE_FIXTURES & set(metafunc.fixturenames):
        return
    run = metafunc.config.stash[RUN_KEY]
    req = _requirements(metafunc.definition)
    channels = channels_for(req, run.run_channels, run.default_channel, run.any_channel)
    # Tests sharing a module's machine are grouped per channel by a module-scoped parameter.
    shared = MODULE_MACHINE_FIXTURES & set(metafunc.fixturenames)
    argname = "railyard_module_target" if shared else "railyard_target"
    scope: Literal["module", "function"] = "module" if argname == "railyard_module_target" else "function"
    module = metafunc.definition.nodeid.split("::")[0]
    params = []
    for ch in channels:
        target = Target(run.platform_name, ch, run.explicit_distro or "", None)
        # The tests sharing a module's machine of one channel must run in one xdist worker (loadgroup).
        marks = [pytest.mark.xdist_group(f"{module}-{ch}")] if scope == "module" else []
        params.append(pytest.param(target, marks=marks, id=f"{run.platform_name}-{ch}"))
    metafunc.parametrize(argname, params, indirect=True, scope=scope)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the longest modules first (harness.ordering); then name grouped items `nodeid@group` on xdist workers, as xdist's loadgroup expects.

    pytest-xdist (3.8) renames them by assigning `item._nodeid`, which pytest 9.2 no longer reads (a node's id
    is the structured `item._id`): without this, the controller sees no groups and spreads the tests of a
    module's shared machine over all workers, each booting its own.
    """
    durations = {d: read_durations(d) for d in {item.path.parent for item in items}}
    items[:] = longest_modules_first(items, {d: r for d, r in durations.items() if r})
    _keep_tagged(config, items)
    _keep_shard(config, items, durations)
    _skip_other_distros(config, items)
    _apply_denylist(config, items)
    if getattr(config, "workerinput", None) is None or not config.getvalue("loadgroup"):
        return
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        ident = getattr(item, "_id", None)
        if mark is None or ident is None or "@" in item.nodeid.rpartition("]")[2]:
            continue  # not grouped, an older pytest, or already named by xdist
        setattr(item, "_id", type(ident).parse(f"{item.nodeid}@{_group_name(mark)}"))  # noqa: B010


def _group_name(mark: pytest.Mark) -> str:
    """The name an `xdist_group` mark gives (as xdist reads it)."""
    return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))


def _group(item: pytest.Item) -> str:
    """The unit a shard keeps whole: the item's xdist group, or the item alone."""
    mark = item.get_closest_marker("xdist_group")
    return item.nodeid if mark is None else _group_name(mark)


def _keep_tagged(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = set(config.getoption("railyard_tags", None) or ())
    if not wanted:
        return
    kept = [item for item in items if _requirements(item).tags & wanted]
    dropped = [item for item in items if not _requirements(item).tags & wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def _keep_shard(
    config: pytest.Config, items: list[pytest.Item], durations: dict[Path, dict[str, float]]
) -> None:
    wanted = config.stash.get(SHARD_KEY, None)
    if wanted is None:
        return
    seconds = {str(d / name): s for d, record in durations.items() for name, s in record.items()}
    parts = shard.split(items, wanted.count, _group, lambda item: str(item.path), seconds)
    kept = parts[wanted.index - 1]
    kept_ids = {id(item) for item in kept}
    dropped = [item for item in items if id(item) not in kept_ids]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def _target_of(item: pytest.Item) -> Target | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in ("railyard_target", "railyard_module_target"):
        if isinstance(params.get(name), Target):
            target: Target = params[name]
            return target
    return None


def _skip_other_distros(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of other distros skipped at collection when the run's distro is known from the command
    line (`--distro`, or the metadata of `--image`): `--co` and `railyard list` then show them skipped, with
    the reason their `distros` marker gives."""
    run = config.stash[RUN_KEY]
    distro = run.explicit_distro or (run.explicit_metadata.distro if run.explicit_metadata else "")
    if not distro:
        return
    for item in items:
        if _target_of(item) is None:
            continue
        reason = distro_refusal(_requirements(item), distro)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _apply_denylist(config: pytest.Config, items: list[pytest.Item]) -> None:
    entries = config.stash.get(DENYLIST_KEY, [])
    if not entries:
        return
    run = config.stash[RUN_KEY]
    today = datetime.date.today()
    arch = host_platform.machine()
    for item in items:
        target = _target_of(item)
        function = getattr(item, "function", None)
        names = denylist.test_names(
            item.nodeid, getattr(item, "originalname", item.name), getattr(function, "__doc__", None)
        )
        channel = target.channel if target else run.default_channel
        decision = denylist.decide(entries, names, channel, run.platform_name, arch, today)
        if decision.skip:
            item.add_marker(pytest.mark.skip(reason=decision.skip))
        elif decision.warn:
            item.stash[WARN_ONLY_KEY] = decision.warn
            item.add_marker(pytest.mark.xfail(reason=decision.warn, strict=False))
            item.user_properties.append((PROPERTY_DENYLIST, decision.warn))


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def railyard_run(pytestconfig: pytest.Config) -> Run:
    """The run: id, output dir, platform, images, SSH key."""
    return pytestconfig.stash[RUN_KEY]


@pytest.fixture(scope="session")
def platform(railyard_run: Run) -> Any:
    """The platform machines boot on (session-scoped; cleans up at the end)."""
    return railyard_run.platform


def _target_and_image(request: pytest.FixtureRequest, run: Run, node: Any) -> tuple[Target, ImageChoice]:
    target: Target = (
        request.param if hasattr(request, "param") else Target(run.platform_name, run.default_channel, "")
    )
    req = _requirements(node)
    options = vars(run.config.option)
    refusal = functools.partial(run.platform_cls.run_option_refusal, options)
    early = skip_reason(req, Target(target.platform, target.channel, "", None), option_refusal=refusal)
    if early:  # decided before any image is built
        pytest.skip(early)
    image = run.image_for(target.channel)
    full = Target(target.platform, target.channel, image.distro.name, image.version)
    capabilities = run.platform_cls.run_capabilities(options)
    reason = skip_reason(req, full, capabilities, refusal) or kernel_args_refusal(
        req.machine, image.metadata, run.machine_firmware(image, req.machine.firmware)
    )
    if reason:
        pytest.skip(reason)
    node.stash[TARGET_KEY] = full
    return full, image


@pytest.fixture
def railyard_target(request: pytest.FixtureRequest, railyard_run: Run) -> tuple[Target, ImageChoice]:
    """What this test runs against (platform, channel, distro, version) and the image to boot."""
    if "railyard_module_target" in request.fixturenames:
        shared: tuple[Target, ImageChoice] = request.getfixturevalue("railyard_module_target")
        return shared
    return _target_and_image(request, railyard_run, request.node)


@pytest.fixture(scope="module")
def railyard_module_target(request: pytest.FixtureRequest, railyard_run: Run) -> tuple[Target, ImageChoice]:
    """The target of the machine a module's tests share."""
    return _target_and_image(request, railyard_run, request.node)


def _failed(item: pytest.Item) -> bool:
    reports = item.stash.get(REPORTS_KEY, {})
    return any(r.failed for r in reports.values())


@contextmanager
def _factory(
    request: pytest.FixtureRequest, run: Run, image: ImageChoice, node: Any, failed: Callable[[], bool]
) -> Iterator[MachineFactory]:
    # A module's shared machine is booted once per channel: the directory names both.
    suffix = "" if isinstance(node, pytest.Item) else f"[{run.platform_name}-{image.channel}]"
    attempt = int(getattr(request.node, "execution_count", 1) or 1)
    if isinstance(node, pytest.Item) and attempt > 1:
        suffix = f"-attempt{attempt}"  # a rerun keeps what the failed attempt left
    directory = run.output_dir / safe_name(node.nodeid.replace("/", ".") + suffix, 120)
    label = node.name if hasattr(node, "name") else "machine"
    factory = MachineFactory(run, image, _requirements(node), directory, label.split("[")[0], node.nodeid)
    # A module's machine that fails to come up (a boot error, a degraded system) fails no test yet: its
    # artifacts, the journal first, are kept all the same.
    raised = False
    try:
        yield factory
    except pytest.skip.Exception:
        raise
    except BaseException:
        raised = True
        raise
    finally:
        for note in factory.finish(raised or failed()):
            log.warning("%s", note)
            if isinstance(request.node, pytest.Item):
                request.node.add_report_section("teardown", "railyard", note)


def _register(request: pytest.FixtureRequest, factory: MachineFactory) -> None:
    item = request.node
    if isinstance(item, pytest.Item):
        item.stash.setdefault(FACTORIES_KEY, []).append(factory)


@pytest.fixture
def machine_factory(
    request: pytest.FixtureRequest, railyard_run: Run, railyard_target: tuple[Target, ImageChoice]
) -> Generator[MachineFactory, None, None]:
    """Boot your own machines: `machine_factory.create(count=2, ignition=..., butane=...)`."""
    with _factory(
        request, railyard_run, railyard_target[1], request.node, lambda: _failed(request.node)
    ) as factory:
        _register(request, factory)
        yield factory


@pytest.fixture
def machine(machine_factory: MachineFactory) -> GuestMachine:
    """A fresh machine for this test, provisioned with the harness's base Ignition plus the test's own."""
    return machine_factory.create(1)[0]


@pytest.fixture
def cluster(machine_factory: MachineFactory) -> list[GuestMachine]:
    """`@pytest.mark.cluster(N)` machines booted together, on a private network (`m.private_address`)."""
    return machine_factory.create(machine_factory.req.cluster_size, private_network=True)


@pytest.fixture(scope="session")
def host_files(platform: Any) -> Generator[HostFiles, None, None]:
    """Files served to the guests over HTTP from the host, reachable from their first boot on (remote Ignition
    configs and sources): `host_files.add(name, data)` gives the guest's URL and Ignition's hash. Tests using it
    need `@pytest.mark.requires("boot-host-services")`."""
    address = platform.boot_host_address
    if address is None:
        raise ConfigError(
            f"platform {platform.name} has no boot-host-services: its guests cannot reach the host"
        )
    files = HostFiles(address)
    yield files
    files.close()


@pytest.fixture(scope="module")
def module_machine(
    request: pytest.FixtureRequest, railyard_run: Run, railyard_module_target: tuple[Target, ImageChoice]
) -> Generator[GuestMachine, None, None]:
    """One machine shared by the tests of a module that only read (markers come from the module)."""
    image = railyard_module_target[1]
    failures: list[bool] = []
    request.node.stash[_MODULE_FAILURES] = failures
    with _factory(request, railyard_run, image, request.node, lambda: any(failures)) as factory:
        request.node.stash[_MODULE_FACTORY] = factory
        yield factory.create(1)[0]


@pytest.fixture(scope="module")
def module_cluster(
    request: pytest.FixtureRequest, railyard_run: Run, railyard_module_target: tuple[Target, ImageChoice]
) -> Generator[list[GuestMachine], None, None]:
    """`@pytest.mark.cluster(N)` machines on a private network, booted together and shared by the tests of a
    module that only read (markers come from the module)."""
    image = railyard_module_target[1]
    failures: list[bool] = []
    request.node.stash[_MODULE_FAILURES] = failures
    with _factory(request, railyard_run, image, request.node, lambda: any(failures)) as factory:
        request.node.stash[_MODULE_FACTORY] = factory
        yield factory.create(factory.req.cluster_size, private_network=True)


_MODULE_FAILURES = pytest.StashKey[list[bool]]()
_MODULE_FACTORY = pytest.StashKey[MachineFactory]()


# -- per-test hooks: timeout, console checks, reports ---------------------------------------------------


@contextmanager
def _alarm(seconds: float | None, nodeid: str) -> Iterator[None]:
    if not seconds:
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise WaitTimeout(f"{nodeid} exceeded its timeout of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    req = _requirements(item)
    with _alarm(req.timeout, item.nodeid):
        result = yield
    factories = [*item.stash.get(FACTORIES_KEY, [])]
    module_factory = item.parent.stash.get(_MODULE_FACTORY, None) if item.parent else None
    if module_factory is not None and MODULE_MACHINE_FIXTURES & set(getattr(item, "fixturenames", ())):
        factories.append(module_factory)
    notes = []
    for guest in (m for f in factories for m in f.machines):
        notes += guest.notes
        guest.notes.clear()
        if guest.start is not None and not any(k == f"start {guest.name}" for k, _ in item.user_properties):
            item.user_properties.append((f"start {guest.name}", guest.start.describe()))
    if notes:
        item.add_report_section("call", "railyard", "\n".join(notes))
    if "no_console_check" in req.flags:
        return result
    run = item.config.stash[RUN_KEY]
    matches = [m for f in factories for m in f.check()]
    failures, tolerated = split_starvation(matches, emulated=run.accel.name == "tcg")
    if tolerated:
        note = "under TCG, taken for host starvation, not a failure:\n" + describe(tolerated)
        log.warning("%s: %s", item.nodeid, note)
        item.add_report_section("call", "railyard", note)
    if failures:
        raise ConsoleCheckError("the machine reported a failure:\n" + describe(failures))
    return result


def _target_properties(item: pytest.Item) -> list[tuple[str, str]]:
    target = item.stash.get(TARGET_KEY, None)
    module = item.getparent(pytest.Module)
    if target is None and module is not None:
        target = module.stash.get(TARGET_KEY, None)
    if target is None:
        target = _target_of(item)
    if target is None:
        return []
    properties = [("platform", target.platform), ("channel", target.channel)]
    if target.distro:
        properties.append(("distro", target.distro))
    if target.version:
        properties.append((PROPERTY_IMAGE_VERSION, target.version))
    return properties


def _artifact_properties(item: pytest.Item) -> list[tuple[str, str]]:
    """Where the console, journal and Ignition config of each of the test's machines are (the files that are
    still there once the test has ended: passing tests' artifacts are deleted unless --keep-artifacts)."""
    factories = [*item.stash.get(FACTORIES_KEY, [])]
    module = item.getparent(pytest.Module)
    module_factory = module.stash.get(_MODULE_FACTORY, None) if module is not None else None
    if module_factory is not None:
        factories.append(module_factory)
    properties = []
    for factory in factories:
        for name in ("console.txt", "journal.txt", "ignition.json", "timeline.svg"):
            for path in sorted(factory.directory.glob(f"*/{name}")):
                properties.append((f"{name.partition('.')[0]} {path.parent.name}", str(path)))
    return properties


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    if report.when == "setup":
        known = {k for k, _ in item.user_properties}
        item.user_properties.extend(p for p in _target_properties(item) if p[0] not in known)
    if report.failed and call.excinfo is not None and call.excinfo.errisinstance(INFRASTRUCTURE_ERRORS):
        item.user_properties.append((reports.PROPERTY_FAILURE, reports.INFRASTRUCTURE))
    attempt = int(getattr(item, "execution_count", 1) or 1)
    if report.when == "call" and report.passed and attempt > 1:
        item.user_properties.append(
            (PROPERTY_FLAKY, f"passed on attempt {attempt} after {attempt - 1} failed")
        )
    if report.when == "teardown":
        known = {k for k, _ in item.user_properties}
        item.user_properties.extend(p for p in _artifact_properties(item) if p[0] not in known)
    report.user_properties = list(item.user_properties)
    if report.failed and item.parent is not None:
        failures = item.parent.stash.get(_MODULE_FAILURES, None)
        if failures is not None:
            failures.append(True)
    return report
