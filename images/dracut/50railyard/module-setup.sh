#!/bin/bash
# Railyard's additions to the initramfs: what Debian's Ignition needs on this
# image, and removal of the first-boot boot entry once Ignition has succeeded.

check() {
    return 255
}

depends() {
    echo ignition systemd
}

install() {
    # Debian's Ignition relabels for SELinux whenever /etc/selinux/config exists
    # in the new root; this image has no SELinux, so relabelling is a no-op.
    inst_script "$moddir/setfiles" /usr/sbin/setfiles

    inst_script "$moddir/railyard-firstboot-done" /usr/sbin/railyard-firstboot-done
    inst_simple "$moddir/railyard-firstboot-done.service" \
        "$systemdsystemunitdir/railyard-firstboot-done.service"
    mkdir -p "$initdir/$systemdsystemunitdir/ignition-complete.target.requires"
    ln_r "$systemdsystemunitdir/railyard-firstboot-done.service" \
        "$systemdsystemunitdir/ignition-complete.target.requires/railyard-firstboot-done.service"

    inst_script "$moddir/railyard-firstboot-checkpoint" /usr/sbin/railyard-firstboot-checkpoint
    inst_simple "$moddir/railyard-firstboot-checkpoint.service" \
        "$systemdsystemunitdir/railyard-firstboot-checkpoint.service"
    ln_r "$systemdsystemunitdir/railyard-firstboot-checkpoint.service" \
        "$systemdsystemunitdir/ignition-complete.target.requires/railyard-firstboot-checkpoint.service"

    inst_simple "$moddir/watchdog.conf" /etc/systemd/system.conf.d/railyard-watchdog.conf
    inst_simple "$moddir/ignition-console.conf" \
        "$systemdsystemunitdir/ignition-.service.d/railyard-console.conf"
    inst_simple "$moddir/networkd-firstboot.conf" \
        "$systemdsystemunitdir/systemd-networkd.service.d/railyard-firstboot.conf"
    inst_simple "$moddir/networkd-socket-firstboot.conf" \
        "$systemdsystemunitdir/systemd-networkd.socket.d/railyard-firstboot.conf"
    inst_simple "$moddir/initrd-dhcp.network" /etc/systemd/network/50-railyard-initrd-dhcp.network
    inst_simple "$moddir/fsck-usr-read-only.conf" \
        "$systemdsystemunitdir/systemd-fsck-usr.service.d/railyard-read-only.conf"
    inst_simple "$moddir/early-modules.conf" /etc/modules-load.d/railyard-early.conf
    inst_multiple mount umount rm sync mkdir rmdir grep cut cat date modprobe sleep
    # Ignition creates RAID arrays with mdadm (its own module installs the other storage tools it finds).
    # and waits for /dev/md/<name>, which mdadm's udev rules create.
    inst_multiple -o mdadm
    inst_rules 63-md-raid-arrays.rules
    # Ignition formats and opens LUKS volumes with cryptsetup. dracut's dm module brings device-mapper's udev
    # rules, which name the opened volume (/dev/mapper/<name>, /dev/disk/by-*), and keeps their udev records
    # across switch-root (without them the real root's udev never labels a volume the initramfs opened).
    inst_multiple -o cryptsetup
}
