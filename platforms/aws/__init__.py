"""The AWS platform: machines are EC2 instances that get the Ignition config as user data.

Per platform instance (one per pytest process, so one per xdist worker) a security group that lets SSH in from
--aws-ssh-cidr only and a key pair holding the run's SSH public key are made at the first boot and deleted by
`close()`. Per machine: the instance (its volumes and network interface go with it) and, for a config over
EC2's 16 KiB user-data limit, an S3 object the user data points at (see platforms.aws.userdata). Everything is
tagged `railyard-run`, `railyard-test` and `railyard-created`, so `railyard gc --platform=aws` finds what a
crashed run leaked. boto3 is imported only when a request is made.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import BootError, ConfigError, PlatformError
from platforms.aws.cleanup import CleanupStack
from platforms.aws.clients import AwsClients, aws_errors, make_clients, wait
from platforms.aws.gc import DEFAULT_GC_AGE, collect_garbage
from platforms.aws.launch import (
    InstanceRequest,
    create_security_group,
    describe_instance,
    find_ami,
    find_subnet,
    import_key_pair,
    put_config,
    run_instance,
    terminate_instances,
)
from platforms.aws.naming import S3_PREFIX, resource_name, run_tags
from platforms.aws.settings import AwsSettings, add_options, settings_from
from platforms.aws.upload import Ec2SnapshotImporter, SnapshotImporter, upload_image
from platforms.aws.userdata import plan_user_data, pointer_config
from platforms.base import (
    CAP_HOST_SERVICES,
    CAP_PRIVATE_NETWORK,
    GarbageRequest,
    Machine,
    MachineSpec,
    PlatformContext,
    SSHEndpoint,
    UploadRequest,
)
from platforms.cloud import CloudPlatform, utc_now

__all__ = ["AwsMachine", "AwsPlatform"]

log = logging.getLogger(__name__)

CONSOLE_REFRESH = 10.0


class AwsMachine(Machine):
    """One EC2 instance. EC2 has no power cut, so no CAP_HARD_RESET: `reset()` asks for a reboot."""

    def __init__(
        self,
        spec: MachineSpec,
        *,
        clients: AwsClients,
        settings: AwsSettings,
        instance_id: str,
        host: str,
        ami: str,
        cleanup: CleanupStack,
        private_ip: str | None = None,
    ) -> None:
        super().__init__(spec)
        self.private_ip = private_ip
        self.clients = clients
        self.settings = settings
        self.instance_id = instance_id
        self.host = host
        self.ami = ami
        self.cleanup = cleanup
        """What goes with the machine besides the instance (the S3 copy of its config)."""
        self.gone = False
        self.destroyed = False
        self._console_at = float("-inf")
        self._console_lock = threading.Lock()

    @property
    def ssh_endpoint(self) -> SSHEndpoint:
        return SSHEndpoint(self.host, 22, self.spec.ssh_user)

    @property
    def private_address(self) -> str | None:
        """The instance's address in the run's subnet, where the run's other machines reach it."""
        return self.private_ip

    @property
    def console_path(self) -> Path:
        """console.txt, refreshed from EC2 when the harness reads it (at most every few seconds)."""
        if not self.gone and time.monotonic() - self._console_at >= CONSOLE_REFRESH:
            self.refresh_console()
        return self.spec.workdir / "console.txt"

    def refresh_console(self) -> bool:
        """Write EC2's console output into console.txt; False (and a log line) when there is none yet."""
        with self._console_lock:
            self._console_at = time.monotonic()
            try:
                with aws_errors(f"reading the console of {self.instance_id}"):
                    output = self.clients.ec2.get_console_output(InstanceId=self.instance_id).get(
                        "Output", ""
                    )
            except PlatformError as exc:
                log.warning("%s: %s", self.name, exc)
                return False
            if not output:
                return False
            path = self.spec.workdir / "console.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(decode_console(output))
            return True

    def state(self) -> str:
        return str(describe_instance(self.clients, self.instance_id).get("State", {}).get("Name", "unknown"))

    def is_running(self) -> bool:
        if self.gone:
            return False
        return self.state() == "running"

    def reset(self) -> None:
        log.info("%s: reboot of %s (EC2 has no hard reset)", self.name, self.instance_id)
        with aws_errors(f"rebooting {self.instance_id}"):
            self.clients.ec2.reboot_instances(InstanceIds=[self.instance_id])

    def poweroff(self, timeout: float) -> None:
        """StopInstances (an ACPI shutdown); a forced stop when the guest has not stopped within `timeout`."""
        if self.gone:
            return
        log.info("%s: stopping %s (up to %.0f s)", self.name, self.instance_id, timeout)
        with aws_errors(f"stopping {self.instance_id}"):
            self.clients.ec2.stop_instances(InstanceIds=[self.instance_id])
        try:
            self._wait("instance_stopped", timeout, "stop")
        except PlatformError as exc:
            log.warning("%s: %s; forcing the stop", self.name, exc)
            with aws_errors(f"force-stopping {self.instance_id}"):
                self.clients.ec2.stop_instances(InstanceIds=[self.instance_id], Force=True)
            self._wait("instance_stopped", self.settings.timeout, "force-stop")

    def kill(self) -> None:
        """Keep the last console output, terminate the instance and wait until it is gone. Idempotent."""
        if self.gone:
            return
        self.refresh_console()
        terminate_instances(
            self.clients,
            [self.instance_id],
            timeout=self.settings.timeout,
            poll_interval=self.settings.poll_interval,
        )
        self.gone = True

    def _wait(self, waiter: str, timeout: float, verb: str) -> None:
        wait(
            self.clients.ec2, waiter, timeout=timeout, poll_interval=self.settings.poll_interval,
            what=f"waiting for {self.instance_id} to {verb}", InstanceIds=[self.instance_id],
        )  # fmt: skip

    def access_hint(self) -> str:
        # The harness appends `-i KEY`; the instance id is in aws-instance.json.
        return f"ssh {self.spec.ssh_user}@{self.host}"

    def artifacts(self) -> dict[str, str]:
        if not self.gone:
            self.refresh_console()
        info = {
            "instance_id": self.instance_id,
            "region": self.clients.region,
            "ami": self.ami,
            "instance_type": self.settings.instance_type,
            "ssh_host": self.host,
        }
        return {"aws-instance.json": json.dumps(info, indent=2) + "\n"}

    def __repr__(self) -> str:
        return f"<AwsMachine {self.name} {self.instance_id} ssh={self.host}>"


def decode_console(output: str) -> str:
    """EC2 hands the console base64-encoded; keep the text as is when it is not."""
    try:
        return base64.b64decode(output, validate=True).decode(errors="replace")
    except (binascii.Error, ValueError):
        return output


class AwsPlatform(CloudPlatform):
    name: ClassVar[str] = "aws"
    size_option: ClassVar[str] = "--aws-instance-type"
    # Host services reach the guest through the harness's SSH connection, as everywhere.
    # The machines of a run share one subnet and a security group that lets them reach each other.
    machine_capabilities: ClassVar[frozenset[str]] = frozenset({CAP_HOST_SERVICES, CAP_PRIVATE_NETWORK})
    # How `upload_image` turns the uploaded raw disk into a snapshot (EC2's ImportSnapshot).
    snapshot_importer: ClassVar[Callable[[AwsClients, AwsSettings], SnapshotImporter]] = Ec2SnapshotImporter

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self.settings = settings_from(ctx.options)
        self._clients: AwsClients | None = None
        self._clients_lock = threading.Lock()
        # The run-wide security group and key pairs, and how many machines (booting or alive) use them.
        self._shared = CleanupStack()
        self._shared_lock = threading.Lock()
        self._group_id: str | None = None
        self._subnet_id: str | None = None
        self._key_names: dict[str, str] = {}
        self._users = 0
        self._amis: dict[str, str] = {}

    @classmethod
    def add_options(cls, group: argparse._ArgumentGroup | Any) -> None:
        add_options(group)

    @classmethod
    def collect_garbage(cls, request: GarbageRequest) -> list[str]:
        settings = settings_from(request.options)
        older_than = DEFAULT_GC_AGE if request.older_than is None else request.older_than
        return collect_garbage(
            make_clients(settings), settings, older_than=older_than, dry_run=request.dry_run
        )

    @classmethod
    def upload_image(cls, request: UploadRequest) -> str:
        settings = settings_from(request.options)
        clients = make_clients(settings)
        return upload_image(clients, settings, request, cls.snapshot_importer(clients, settings))

    @property
    def clients(self) -> AwsClients:
        with self._clients_lock:
            if self._clients is None:
                self._clients = make_clients(self.settings)
            return self._clients

    def validate(self) -> None:
        """Options and credentials, before anything is created (no request is sent)."""
        self.settings.require_region()
        self.settings.require_ssh_cidr()
        if self.clients.session.get_credentials() is None:
            raise ConfigError(
                "no AWS credentials found: set AWS_PROFILE or --aws-profile (~/.aws/config, `aws sso login`), "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an instance role is available"
            )

    # -- boot --------------------------------------------------------------------------------------------

    def _boot(self, spec: MachineSpec) -> AwsMachine:
        # Everything that can be refused without a request is refused first.
        plan = plan_user_data(spec.ignition.text, self.settings.bucket)
        version = spec.ignition.version
        ssh_cidr = self.settings.require_ssh_cidr()
        spec.workdir.mkdir(parents=True, exist_ok=True)
        ami = self._ami_for(spec.channel)
        with self._shared_lock:
            self._users += 1
        cleanup = CleanupStack()
        try:
            group_id, subnet_id, key_name = self._ensure_shared(spec, ssh_cidr)
            tags = run_tags(self.ctx.run_id, utc_now(), spec.test_id, name=spec.name)
            user_data = plan.config
            if not plan.inline:
                bucket = self.settings.require_bucket("an Ignition config over 16 KiB")
                key = f"{S3_PREFIX}ignition/{self.ctx.run_id}/{spec.name}-{secrets.token_hex(4)}.ign"
                expires = self.settings.timeout + 4 * self.ctx.timeouts.boot
                url = put_config(
                    self.clients,
                    cleanup,
                    bucket=bucket,
                    key=key,
                    config=plan.config,
                    tags=tags,
                    expires=expires,
                )
                user_data = pointer_config(url, plan.config, version)
                log.info("%s: Ignition config (%d bytes) via s3://%s/%s", spec.name, plan.size, bucket, key)
            request = InstanceRequest(
                ami=ami,
                instance_type=self.settings.instance_type,
                user_data=user_data,
                security_group=group_id,
                key_name=key_name,
                subnet=subnet_id,
                public_ip=not self.settings.private_ip,
                tags=tags,
            )
            instance_id, terminate_undo = run_instance(self.clients, cleanup, request, settings=self.settings)
            log.info(
                "%s: instance %s (%s, %s) starting", spec.name, instance_id, self.settings.instance_type, ami
            )
            wait(
                self.clients.ec2, "instance_running", timeout=self.settings.timeout,
                poll_interval=self.settings.poll_interval, what=f"waiting for {instance_id} to run",
                InstanceIds=[instance_id],
            )  # fmt: skip
            instance = describe_instance(self.clients, instance_id)
            host = self._address(instance, instance_id)
            machine = AwsMachine(
                spec, clients=self.clients, settings=self.settings, instance_id=instance_id, host=host, ami=ami,
                cleanup=cleanup, private_ip=instance.get("PrivateIpAddress"),
            )  # fmt: skip
            # From here the machine terminates its instance itself (kill), keeping the console first.
            cleanup.discard(terminate_undo)
        except BaseException:
            cleanup.unwind()
            self._leave(failed=True)
            raise
        log.info("%s: %s running, SSH at %s", spec.name, instance_id, host)
        return machine

    def _address(self, instance: Any, instance_id: str) -> str:
        if self.settings.private_ip:
            host = instance.get("PrivateIpAddress")
            if not host:
                raise BootError(f"instance {instance_id} has no private address")
            return str(host)
        host = instance.get("PublicIpAddress")
        if not host:
            raise BootError(
                f"instance {instance_id} got no public address: use a subnet that assigns public addresses, or "
                "--aws-private-ip when the runner reaches the subnet"
            )
        return str(host)

    def _ami_for(self, channel: str) -> str:
        with self._shared_lock:
            cached = self._amis.get(channel)
        if cached is not None:
            return cached
        ami = find_ami(self.clients, self.settings, channel)
        with self._shared_lock:
            self._amis[channel] = ami
        return ami

    def _ensure_shared(self, spec: MachineSpec, ssh_cidr: str) -> tuple[str, str, str | None]:
        """The run's security group, its subnet and the key pair of the config's first SSH key, made (or
        found) on first use."""
        tags = run_tags(self.ctx.run_id, utc_now(), name=f"railyard-{self.ctx.run_id}")
        with self._shared_lock:
            if self._group_id is None or self._subnet_id is None:
                vpc_id, self._subnet_id = find_subnet(self.clients, self.settings.subnet)
                self._group_id = create_security_group(
                    self.clients, self._shared, name=resource_name(self.ctx.run_id, "ssh"), vpc_id=vpc_id,
                    ssh_cidr=ssh_cidr, tags=tags, delete_timeout=self.settings.timeout,
                    poll_interval=self.settings.poll_interval,
                )  # fmt: skip
            keys = spec.ignition.ssh_keys()
            key_name = None
            if keys:
                key_name = self._key_names.get(keys[0])
                if key_name is None:
                    key_name = import_key_pair(
                        self.clients, self._shared, name=resource_name(self.ctx.run_id, "key"),
                        public_line=keys[0], tags=tags,
                    )  # fmt: skip
                    self._key_names[keys[0]] = key_name
            return self._group_id, self._subnet_id, key_name

    def _leave(self, failed: bool) -> None:
        """A machine stopped using the shared resources; after a failed boot with nobody else left, delete
        them so that the failure leaves nothing behind (the next boot makes them again)."""
        with self._shared_lock:
            self._users = max(0, self._users - 1)
            if failed and self._users == 0:
                self._drop_shared()

    def _drop_shared(self) -> None:
        """Delete the security group and key pairs (failures are logged: `railyard gc` collects them later,
        and an error here must not hide the one that led to it)."""
        failures = self._shared.unwind()
        self._group_id = None
        self._subnet_id = None
        self._key_names.clear()
        if failures:
            log.error("cleanup of the run's AWS resources failed: %s", "; ".join(failures))

    # -- teardown ----------------------------------------------------------------------------------------

    def _destroy(self, machine: Machine) -> None:
        if not isinstance(machine, AwsMachine):
            raise PlatformError(f"{machine!r} was not booted by the aws platform")
        if machine.destroyed:
            return
        try:
            machine.kill()
        finally:
            machine.destroyed = True
            failures = machine.cleanup.unwind()
            self._leave(failed=False)
        if failures:
            raise PlatformError(f"cleanup of {machine.name} failed: " + "; ".join(failures))

    def close(self) -> None:
        try:
            super().close()
        finally:
            with self._shared_lock:
                if self._users == 0:
                    self._drop_shared()
                elif len(self._shared):
                    log.warning(
                        "kept machines still use %s; `railyard gc --platform=aws` deletes them once they are old",
                        ", ".join(self._shared.descriptions()),
                    )
