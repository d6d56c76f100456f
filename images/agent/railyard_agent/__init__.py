"""railyard update agent: an Omaha v3 client that keeps the A/B /usr slots up to date.

A cycle: update check -> (13) download started -> download into the state directory (resuming a partial
file with a Range request) -> check size, SHA-256 and the OpenSSH signature -> (14) download
finished -> `railyard-slot install` (a zstd payload by its path, decompressed by the tool straight into the
inactive slot; gzip or xz into its standard input; boots the slot once on trial) -> (3/1) update applied; status UPDATE_STATUS_UPDATED_NEED_REBOOT. Any failure reports 3/0 with an error code,
deletes what was downloaded (a broken transfer keeps its partial file for the next try) and never
touches a slot.

After a reboot into the new version, once the boot is complete (the health check passed) the agent
makes sure the slot is blessed (`railyard-slot mark-good` if systemd-bless-boot did not) and reports
3/2 with previousversion. When the machine came back on the old version, or `railyard-slot status`
shows a failed trial of the other slot, it reports 3/0 with errorcode 44 (update_engine's rollback
report, previousversion = the version that failed) once, and scheduled checks skip that version (and
one left by `rollback`) until a check-now asks for it. Scheduled checks start INTERVAL seconds after
the agent does, never at boot: a machine under test updates when it is told to.

Configuration: /usr/share/railyard/update.conf, overridden key by key by /etc/railyard/update.conf:
SERVER (URL or "disabled"), GROUP, APP_ID, INTERVAL (seconds), SIGNING_KEY (allowed_signers file or
OpenSSH public key; "none" skips the signature check), MARK_GOOD (yes/no).
Status: /run/railyard/update-status (key=value). Commands: run, once, status, check-now, rollback.

The package's modules: config (paths and update.conf), protocol (Omaha requests and answers), status (the
status file), sparse (the download's writer), payload (download, verify, unpack, install), agent (the
cycle, the reports after a reboot and the service loop) and commands (the command line, railyard-update).
"""
