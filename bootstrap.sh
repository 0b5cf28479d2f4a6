#!/usr/bin/env bash
# pmemlab quick start. On a fresh Debian 12 / Ubuntu machine, as an ordinary user with sudo (or as root):
#
#   ./bootstrap.sh          install everything, build the guest image, run the main job
#   ./bootstrap.sh test     install everything, build the guest image, run the full test suite
#
# Only apt runs under sudo. The lab itself runs as the invoking user: QEMU under TCG needs no privilege,
# KVM needs read-write /dev/kvm (the kvm group; 'pmemlab doctor' says), and 'apt-get download' of the
# guest kernel works unprivileged.
# Idempotent: installed packages, the virtualenv and the cached image are reused.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(qemu-system-x86 qemu-utils kmod cpio busybox-static ndctl daxctl e2fsprogs xfsprogs
              gcc libc6-dev util-linux python3 python3-venv python3-dev
              # the libvirt backend (pmemlab[libvirt]): the daemon and its QEMU driver (no systemd unit is
              # needed: the tests start 'libvirtd -d' themselves), and what libvirt-python builds against
              # (python3-dev above: Python.h, which a bare Debian lacks)
              libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
              # remote hosts (pmemlab[remote]): the tests run a second host's sshd in a network namespace
              openssh-server openssh-client iproute2
              # bisect --git and the watch git kernel source drive git
              git)
# The tests start a PostgreSQL server of their own and drive Debian's chromium (the dashboard).
APT_PACKAGES+=(postgresql chromium)
# The ADR persistence model's QEMU 10 (unpacked privately by images/qemu-adr.sh) links these; its
# plugin is compiled against glib; xz unpacks the source tarball its qemu-plugin.h comes from.
APT_PACKAGES+=(xz-utils pkg-config libglib2.0-dev libaio1 libbpf1 libcapstone4 libfdt1 libfuse3-3 libibverbs1
               libjpeg62-turbo libnuma1 libpixman-1-0 libpmem1 libpng16-16 librdmacm1 libsasl2-2 libseccomp2
               libslirp0 liburing2 libvdeplug2 libzstd1)

# Debian 12: bookworm-backports (binaries and sources) for the ADR model's QEMU 10; nothing is
# installed from it (backports are never preferred by apt), images/qemu-adr.sh only downloads.
BACKPORTS=/etc/apt/sources.list.d/pmemlab-bookworm-backports.sources
added_backports=0
# The mirror is the one this machine's apt already uses for bookworm (deb822 or one-line sources).
bookworm_mirror() {
    awk '/^URIs:/ {u=$2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == "bookworm") {print u; exit}}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1
    awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null | head -n 1
}
if grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release && [ ! -f "$BACKPORTS" ]; then
    # Both source formats may name it: head closes the pipe after the first, which must not count as a
    # failure under pipefail (it ended this script silently with 141 on such a machine).
    mirror=$( { bookworm_mirror || true; } | head -n 1)
    if [ -z "$mirror" ]; then
        echo "bootstrap: no apt source for bookworm found in /etc/apt: cannot add bookworm-backports (ADR model)" >&2
        exit 2
    fi
    echo "bootstrap: adding the bookworm-backports apt source ($BACKPORTS, mirror $mirror)"
    printf 'Types: deb deb-src\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" | $SUDO tee "$BACKPORTS" >/dev/null
    added_backports=1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# The image builder asks apt for Debian's kernel package: apt's lists must be there.
if [ "${#missing[@]}" -gt 0 ] || [ "$added_backports" = 1 ] || ! apt-cache policy linux-image-amd64 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    echo "bootstrap: apt-get update"
    $SUDO apt-get update -qq
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.pmemlab-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing the pmemlab Python package"
    .venv/bin/pip install -q --disable-pip-version-check -e ".[test,cluster,postgres,web,libvirt,remote]"
    echo "$want" > "$stamp"
fi

.venv/bin/pmemlab image build
# QEMU 10 for `persistence = "adr"`, unpacked into the cache beside (not over) the system QEMU.
if grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release; then
    images/qemu-adr.sh >/dev/null
fi

case "${1:-run}" in
    run)
        .venv/bin/pmemlab doctor || true
        exec .venv/bin/pmemlab run mapsync --fs ext4
        ;;
    test)
        rc=0
        .venv/bin/python -m pytest -v -ra --durations=40 tests || rc=$?
        # The tests start their own libvirtd and sshd and must stop them by pid: none may outlive the suite.
        if pgrep -af 'libvirtd -d -p /var/run/libvirt/pmemlab-test|sshd -f /tmp/pmemlab-sshd-'; then
            echo "bootstrap: the tests left the processes above running" >&2
            rc=1
        fi
        exit "$rc"
        ;;
    *)
        echo "usage: $0 [run|test]" >&2
        exit 2
        ;;
esac
