/* The smallest useful PID 1 for the boot benchmark: say that userspace was reached, then power off. */
#include <fcntl.h>
#include <linux/reboot.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(void) {
    static const char msg[] = "RAILYARD-BENCH-USERSPACE\n";
    int fd = open("/dev/console", O_WRONLY);
    if (fd < 0) fd = open("/dev/ttyS0", O_WRONLY);
    if (fd >= 0) { (void)write(fd, msg, sizeof msg - 1); fsync(fd); }
    reboot(LINUX_REBOOT_CMD_POWER_OFF);
    for (;;) pause();
}
