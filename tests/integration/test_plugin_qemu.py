"""The plugin end to end: real QEMU boots under the accelerator this host has, through a child pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import leftover_disks, qemu_processes_under, run_inner


def test_passing_test(pytester):
    pytester.makepyfile(
        test_pass="""
        import http.server, threading

        def test_echo(machine):
            assert machine.succeed("echo hello") == "hello\\n"
            assert machine.os.booted_slot() == "USR-A"
            # A service on the host's 127.0.0.1 answers the guest at the guest's own 127.0.0.1.
            class Hello(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = f"hello from the host, {self.path}".encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            port = machine.forward_host_service(server.server_address[1])
            got = machine.succeed(f"curl -sf http://127.0.0.1:{port}/guest")
            server.shutdown()
            assert got == "hello from the host, /guest"
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_echo?qemu-stable? PASSED*"])
    out = pytester.path / "out"
    assert qemu_processes_under(out) == []
    assert leftover_disks(out) == []
    assert not any(out.rglob("console.txt")), "artifacts of a passing test are not kept by default"


def test_failing_assertion_keeps_artifacts(pytester):
    pytester.makepyfile(
        test_fail="""
        def test_wrong(machine):
            assert machine.succeed("echo actual").strip() == "expected"
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError*actual*expected*"])
    out = pytester.path / "out"
    [machine_dir] = [p.parent for p in out.rglob("console.txt")]
    for name in ("console.txt", "journal.txt", "ignition.json", "qemu-cmdline.txt"):
        assert (machine_dir / name).stat().st_size > 0, f"{name} is empty"
    # The guest boots with `quiet`: the serial console holds the firmware's lines and the login prompt.
    assert " login: " in (machine_dir / "console.txt").read_text(errors="replace")
    assert qemu_processes_under(out) == []
    assert leftover_disks(out) == []


def test_kernel_panic_is_detected(pytester):
    pytester.makepyfile(
        test_panic="""
        def test_crash(machine):
            machine.execute("sudo sh -c 'echo 1 > /proc/sys/kernel/sysrq; "
                            "(sleep 1; echo c > /proc/sysrq-trigger) >/dev/null 2>&1 &'")
            deadline = machine.timeouts.command
            from harness.retry import poll
            poll(lambda: "Kernel panic" in machine.console_text() or None, timeout=deadline, what="the panic")
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ConsoleCheckError*", "*kernel panic: *Kernel panic - not syncing*"])
    assert qemu_processes_under(pytester.path / "out") == []


def test_invalid_ignition_fails_before_any_boot(pytester):
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.ignition({"ignition": {"version": "3.3.0"},
                               "storage": {"files": [{"path": "relative/path"}]}})
        def test_never_boots(machine):
            raise AssertionError("must not run")
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ConfigError*relative/path*"])
    out = pytester.path / "out"
    assert not any(out.rglob("console.txt")), "a machine was started for an invalid config"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--platform=nosuch"], "*argument --platform: invalid choice*"),
        (["--image=/nonexistent.qcow2"], "*--image /nonexistent.qcow2: no such file*"),
        (["--qemu-accel=fast"], "*argument --qemu-accel: invalid choice*"),
    ],
)
def test_bad_options_are_one_clear_error(pytester, args, message):
    pytester.makepyfile(test_x="def test_x(machine):\n    pass\n")
    result = run_inner(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert qemu_processes_under(pytester.path / "out") == []


def test_timeout_leaves_nothing_behind(pytester):
    pytester.makepyfile(
        test_slow="""
        import pytest

        @pytest.mark.timeout(3)
        def test_hangs(machine):
            machine.succeed("sleep 600", timeout=900)
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*exceeded its timeout of 3 s*"])
    out = pytester.path / "out"
    assert qemu_processes_under(out) == []
    assert leftover_disks(out) == []


def start_inner(pytester, out, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--output-dir", str(out), *args],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_qemu(proc, out):
    deadline = time.monotonic() + 3600  # under TCG it may wait for other tests' machines to end
    while not (found := qemu_processes_under(out)):
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert time.monotonic() < deadline, "no machine started"
        time.sleep(0.5)
    return found


def wait_until_gone(out, seconds):
    deadline = time.monotonic() + seconds
    while qemu_processes_under(out) or leftover_disks(out):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_run_stopped_mid_boot_leaves_nothing_behind(pytester, sig):
    """Ctrl-C, a CI system's cancel (SIGTERM) and a closed terminal (SIGHUP) all end a run cleanly."""
    pytester.makepyfile(test_boot="def test_boot(machine):\n    pass\n")
    out = pytester.path / "out"
    proc = start_inner(pytester, out, "--warm=off", "test_boot.py")  # a cold boot, to stop mid-way
    try:
        wait_for_qemu(proc, out)
        proc.send_signal(sig)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert qemu_processes_under(out) == []
    assert leftover_disks(out) == []


def test_a_killed_worker_leaves_nothing_behind(pytester):
    """SIGKILL to an xdist worker mid-boot: its QEMU dies with it, and the run removes its disks."""
    pytester.makepyfile(test_boot="def test_boot(machine):\n    pass\n")
    out = pytester.path / "out"
    proc = start_inner(pytester, out, "--warm=off", "-n", "1", "test_boot.py")
    try:
        [line] = wait_for_qemu(proc, out)
        qemu_pid = int(line.split()[0])
        worker = int(Path(f"/proc/{qemu_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(worker, signal.SIGKILL)
        output = proc.communicate(timeout=300)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "crashed" in output or "replacing crashed worker" in output, output
    assert wait_until_gone(out, 30), (qemu_processes_under(out), leftover_disks(out), output)
