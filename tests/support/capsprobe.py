"""A static probe binary for capability tests: the calls busybox cannot make (raw and ICMP
sockets, file-capability xattrs, device nodes opened, interface flags, module loading)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PROBE_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

static int err(long r) { return r >= 0 ? 0 : errno; }

int main(int argc, char **argv) {
    const char *op = argc > 1 ? argv[1] : "";
    if (!strcmp(op, "raw")) {            /* what ping does with CAP_NET_RAW */
        printf("raw=%d\n", err(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)));
    } else if (!strcmp(op, "ping")) {    /* ICMP echo socket: one echo to 127.0.0.1 and its reply */
        int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
        if (s < 0) { printf("ping=%d\n", errno); return 0; }
        struct icmphdr h = {0};
        h.type = ICMP_ECHO; h.un.echo.sequence = htons(1);
        struct sockaddr_in to = {0};
        to.sin_family = AF_INET; to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (sendto(s, &h, sizeof h, 0, (struct sockaddr *)&to, sizeof to) < 0) { printf("ping=%d\n", errno); return 0; }
        struct pollfd p = {s, POLLIN, 0};
        char buf[256];
        printf("ping=%d\n", poll(&p, 1, 3000) == 1 && recv(s, buf, sizeof buf, 0) > 0 ? 0 : ETIMEDOUT);
    } else if (!strcmp(op, "setcap") && argc > 2) {  /* setcap cap_setuid+ep (vfs_cap_data v2) */
        unsigned int cap[5] = {0x02000001, 1u << 7, 0, 0, 0};
        printf("setcap=%d\n", err(setxattr(argv[2], "security.capability", cap, sizeof cap, 0)));
    } else if (!strcmp(op, "mknod") && argc > 5) {   /* mknod PATH c|b MAJOR MINOR, then open it */
        mode_t kind = argv[3][0] == 'b' ? S_IFBLK : S_IFCHR;
        dev_t dev = makedev(atoi(argv[4]), atoi(argv[5]));
        printf("mknod=%d\n", err(mknod(argv[2], kind | 0600, dev)));
        printf("open=%d\n", err(open(argv[2], O_RDONLY)));
    } else if (!strcmp(op, "open") && argc > 2) {
        printf("open=%d\n", err(open(argv[2], O_RDONLY)));
    } else if (!strcmp(op, "ifdown") && argc > 2) {  /* what `ip link set X down` does */
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct ifreq r = {0};
        strncpy(r.ifr_name, argv[2], IFNAMSIZ - 1);
        ioctl(s, SIOCGIFFLAGS, &r);
        r.ifr_flags &= ~IFF_UP;
        printf("ifdown=%d\n", err(ioctl(s, SIOCSIFFLAGS, &r)));
    } else if (!strcmp(op, "module")) {  /* finit_module on an empty file, init_module on nothing */
        int fd = open("/proc/self/exe", O_RDONLY);
        printf("finit_module=%d\n", err(syscall(SYS_finit_module, fd, "", 0)));
        printf("init_module=%d\n", err(syscall(SYS_init_module, "", 0, "")));
    } else if (!strcmp(op, "caps")) {    /* this process's permitted set, as /proc shows it */
        char line[256];
        FILE *f = fopen("/proc/self/status", "r");
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "CapPrm:", 7)) fputs(line, stdout);
    } else if (!strcmp(op, "chroot") && argc > 2) {
        printf("chroot=%d\n", err(chroot(argv[2])));
    } else {
        printf("usage\n");
        return 2;
    }
    return 0;
}
"""


def build_probe_rootfs(busybox_rootfs: Path, work: Path) -> Path:
    """A copy of ``busybox_rootfs`` with /probe (static) in it."""
    (work / "capsprobe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O", "-o", str(work / "capsprobe"), str(work / "capsprobe.c")], check=True)
    root = work / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    shutil.copy(work / "capsprobe", root / "probe")
    os.chmod(root / "probe", 0o755)
    return root


def status_caps(status: str) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a /proc/<pid>/status text, as ints."""
    out = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            out[key] = int(value.strip(), 16)
    return out
