#!/bin/bash
# Removes from the initramfs what other dracut modules install but a Railyard boot never uses, where each
# costs a shell run on every boot (about a second apiece under emulation). Installed last of the modules
# (99, after dracut-systemd and rootfs-block), so what it removes is already there.
#
# - dracut's network module: the cmdline hook for root=dhcp and the pre-udev hook for ifname= (this
#   initramfs brings its network up with systemd-networkd, on a first boot only: 50railyard);
# - dm's pre-udev hook, which only reads rd.dm=0 (a dmraid switch: this image has no dmraid);
# - rootfs-block's initqueue: its generator (a shell script sourcing dracut-lib) writes the root= mount and
#   an initqueue wait for the root device; systemd-fstab-generator writes the same mount (root= and
#   mount.usr=) and systemd waits for the devices itself. Without need-initqueue and the fallback hook,
#   dracut-initqueue.service is skipped, and with empty cmdline and pre-udev hook folders, so are
#   dracut-cmdline.service and dracut-pre-udev.service (their conditions). dracut-initqueue.service is no
#   longer wanted by initrd.target at all: even skipped, its job is ordered after the whole of udev's
#   coldplug, and dracut-pre-mount.service (before the root's fsck and mount) after it, so the root waited
#   for every tty and ACPI device to be processed (about 2 s of a one-vCPU boot, once the disk's driver
#   loads early). `rd.break=initqueue` is the one thing lost.
# - systemd's GPT auto-mount generator, which the kernel command line turns off (systemd.gpt_auto=0).
# - systemd-sysusers.service: the users and groups of the initramfs's sysusers.d (the groups udev's rules
#   name, systemd-network for networkd) are made here, once, in its /etc/passwd and /etc/group, and the
#   unit is masked. At boot it made the same ones every time, ordered before the static device nodes and
#   udevd: 0.4 to 0.5 s of a one-vCPU boot under emulation. (The real root runs its own, on a first boot.)
# The emergency shell settings (rd.emergency=reboot, rd.shell=0) and the shutdown hooks are kept.

check() {
    return 255
}

depends() {
    return 0
}

install() {
    rm -f -- \
        "${initdir}/lib/dracut/hooks/cmdline/91-dhcp-root.sh" \
        "${initdir}/lib/dracut/hooks/pre-udev/50-ifname-genrules.sh" \
        "${initdir}/lib/dracut/hooks/pre-udev/30-dm-pre-udev.sh" \
        "${initdir}/lib/dracut/hooks/initqueue/timeout/99-rootfallback.sh" \
        "${initdir}/lib/dracut/need-initqueue" \
        "${initdir}${systemdutildir}/system-generators/dracut-rootfs-generator" \
        "${initdir}${systemdutildir}/system-generators/systemd-gpt-auto-generator" \
        "${initdir}/etc/systemd/system/initrd.target.wants/dracut-initqueue.service"
    systemd-sysusers --root "$initdir" >/dev/null
    mkdir -p "${initdir}/etc/systemd/system"
    ln -sfn /dev/null "${initdir}/etc/systemd/system/systemd-sysusers.service"
}
