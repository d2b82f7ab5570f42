#!/usr/bin/env bash
# Guest kernel for corehop's VM baseline (crates/vm): Debian's current `linux-image-amd64`
# kernel, fetched with `apt-get download` (never installed: the host keeps its own kernel),
# unpacked with dpkg-deb into /var/cache/corehop/vm:
#   vmlinuz            the kernel as Debian ships it (bzImage, xz-compressed)
#   vmlinux            the same kernel uncompressed (ELF with a PVH entry note): QEMU
#                      boots it directly, which under TCG saves the ~8 s the guest spends
#                      un-xz-ing itself; absent (vmlinux.none) if the kernel has no PVH
#   config             its build config (for reference)
#   modules/*.ko       virtio-net and virtio-pci, tun and nf_tables NAT (the SPGW's SGi)
#                      with their dependencies, which Debian builds as modules; the
#                      initramfs loads them before eth0 is set up
#   modules/load.order the .ko names in load order (dependencies first), one a line
#   modules/lab.order  more .ko names (not in load.order) a guest that is itself a corehop
#                      lab host loads after them: bridge and veth for the lab's hosts, the
#                      socket-diag modules `criu check` needs, ctnetlink and the
#                      xtables matches CRIU dumps and locks with (crates/vm/src/labhost.rs)
#   modules/sctp.order more .ko names a guest running a program on the kernel's SCTP loads
#                      (sctp with udp_tunnel: NextEPC's MME, a kernel-SCTP eNB)
#   modules/wanted     the WANT_MODULES this was made for
#   qemu-ga            QEMU's guest agent from Debian's `qemu-guest-agent` (also only
#                      downloaded): the guest runs it on its second serial port, so the
#                      host can read a file inside the guest (e.g. the SPGW's tunnel list)
#   kernel.pkg         the package this came from; when it names apt's current candidate
#                      and modules/wanted matches WANT_MODULES nothing is done (quick
#                      and idempotent)
# Run as root. Needs apt, dpkg-deb, modinfo and depmod (kmod).
set -euo pipefail

VMDIR=${COREHOP_VM_DIR:-/var/cache/corehop/vm}
# The guest needs its NIC (virtio-net on virtio-pci) and, for the SPGW's SGi, TUN and
# nf_tables masquerade (nf_nat and nf_conntrack come in as dependencies); everything else
# it uses is built in. Changing this list redoes the folder (see modules/wanted).
WANT_MODULES=(virtio_pci virtio_net tun nf_tables nft_chain_nat nft_masq)
# A guest that runs a lab itself (containers with runc and CRIU inside the VM, e.g. to use
# the guest kernel's soft-dirty tracking for real CRIU pre-dumps): the lab's bridges and
# veths, the sock_diag modules CRIU reads sockets through (Debian builds them as modules;
# `criu check` fails without them), ctnetlink (CRIU dumps a namespace's conntrack table;
# without it nfnetlink answers EINVAL), and the xtables matches iptables-nft needs for the
# rules CRIU locks a dumped container's TCP connections with (`-m mark`).
LAB_MODULES=(bridge veth inet_diag tcp_diag udp_diag raw_diag unix_diag netlink_diag af_packet_diag
  nf_conntrack_netlink nft_compat xt_mark xt_tcpudp nfnetlink_queue xt_NFQUEUE)
# A guest running a program on the kernel's SCTP (NextEPC's MME, an eNB on Linux SCTP),
# with RFC 6951 UDP encapsulation (net.sctp.udp_port, Linux 5.11+) so that corehop's
# SCTP-over-UDP peers reach it.
SCTP_MODULES=(sctp)
# What modules/wanted records: the lists and how they are resolved (bump the revision when
# the resolution changes, so existing folders are redone).
WANTED="rev4 ${WANT_MODULES[*]} lab: ${LAB_MODULES[*]} sctp: ${SCTP_MODULES[*]}"

log() { printf 'setup-vm: %s\n' "$*"; }
die() { printf 'setup-vm: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get download and writing $VMDIR need it)"
for t in apt-get apt-cache dpkg-deb modinfo depmod; do
  command -v "$t" >/dev/null || die "$t is missing (install apt, dpkg and kmod)"
done

# The meta package depends on the versioned kernel package that holds the files.
current_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

pkg=$(current_pkg)
if [ -z "$pkg" ]; then
  log "apt does not know linux-image-amd64 yet: apt-get update"
  apt-get update -qq
  pkg=$(current_pkg)
  [ -n "$pkg" ] || die "apt knows no linux-image-amd64 kernel; check the apt sources"
fi

if [ -s "$VMDIR/vmlinuz" ] && [ -s "$VMDIR/modules/load.order" ] &&
   [ -s "$VMDIR/modules/lab.order" ] && [ -s "$VMDIR/modules/sctp.order" ] &&
   { [ -s "$VMDIR/vmlinux" ] || [ -e "$VMDIR/vmlinux.none" ]; } &&
   [ "$(cat "$VMDIR/kernel.pkg" 2>/dev/null)" = "$pkg" ] &&
   [ "$(cat "$VMDIR/modules/wanted" 2>/dev/null)" = "$WANTED" ] && [ -x "$VMDIR/qemu-ga" ]; then
  log "guest kernel $pkg already in $VMDIR"
  exit 0
fi

work=$(mktemp -d /var/tmp/corehop-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
# apt drops privileges to _apt for downloads; give it the folder so it does not warn.
chown _apt "$work" 2>/dev/null || true
log "downloading $pkg"
if ! (cd "$work" && apt-get download -qq "$pkg" 2>/dev/null); then
  # The package lists may name a version the mirror no longer has.
  apt-get update -qq
  (cd "$work" && apt-get download -qq "$pkg") || die "apt-get download $pkg failed"
fi
deb=$(ls "$work"/*.deb)
log "extracting $(basename "$deb")"
dpkg-deb -x "$deb" "$work/root"
# The guest agent's libraries (glib, ...) are QEMU's own dependencies, so this host has
# them; the image copies them from here as ldd lists them.
mkdir "$work/ga" && chown _apt "$work/ga" 2>/dev/null || true
(cd "$work/ga" && apt-get download -qq qemu-guest-agent) ||
  die "apt-get download qemu-guest-agent failed"
dpkg-deb -x "$(ls "$work"/ga/*.deb)" "$work/ga/root"
[ -x "$work/ga/root/usr/sbin/qemu-ga" ] || die "qemu-guest-agent holds no /usr/sbin/qemu-ga"

kver=$(ls "$work/root/lib/modules" | head -n1)
[ -n "$kver" ] || die "$pkg holds no /lib/modules"
mods="$work/root/lib/modules/$kver"
config="$work/root/boot/config-$kver"
[ -f "$work/root/boot/vmlinuz-$kver" ] || die "$pkg holds no /boot/vmlinuz-$kver"

# Stage into a fresh folder and swap it in at the end, so a failed run never leaves a
# half-written guest kernel that looks complete.
stage="$work/out"
mkdir -p "$stage/modules"
cp "$work/root/boot/vmlinuz-$kver" "$stage/vmlinuz"
cp "$config" "$stage/config"
cp "$work/ga/root/usr/sbin/qemu-ga" "$stage/qemu-ga"

# The uncompressed kernel: the xz stream inside the bzImage (what the kernel's own
# scripts/extract-vmlinux does). xz stops with an error at the bzImage's trailing bytes
# after the stream, so success is judged by the ELF magic of the result.
vmlinux_ok=
if grep -qx 'CONFIG_PVH=y' "$config" && command -v xz >/dev/null; then
  off=$(LC_ALL=C grep -aboP '\xfd7zXZ\x00' "$stage/vmlinuz" | head -n1 | cut -d: -f1 || true)
  if [ -n "$off" ]; then
    tail -c +"$((off + 1))" "$stage/vmlinuz" | xz -dc >"$stage/vmlinux" 2>/dev/null || true
    [ "$(head -c 4 "$stage/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] && vmlinux_ok=1
  fi
fi
if [ -z "$vmlinux_ok" ]; then
  log "no PVH-bootable vmlinux could be extracted; VMs boot the compressed vmlinuz (slower)"
  rm -f "$stage/vmlinux"
  touch "$stage/vmlinux.none"
fi

# Where a module lives, found by name (a file name uses '_' or '-' interchangeably).
find_ko() {
  local n=$1 f
  for pat in "$n.ko" "${n//_/-}.ko" "$n.ko.xz" "$n.ko.zst"; do
    f=$(find "$mods/kernel" -name "$pat" -print -quit)
    [ -n "$f" ] && { echo "$f"; return 0; }
  done
  return 1
}

# A soft dependency may name an alias (libcrc32c wants "crc32c", which crc32c_generic and
# crc32c_intel provide): the generic one, as the guest's CPU model may lack the extensions
# an accelerated one needs.
resolve_alias() {
  local n=$1 cands
  if find_ko "$n" >/dev/null || grep -qE "/(${n}|${n//_/-})\.ko\$" "$mods/modules.builtin"; then
    echo "$n"; return 0
  fi
  # The package ships no modules.alias (depmod writes it on install): make it here.
  [ -s "$mods/modules.alias" ] || depmod -b "$work/root" "$kver" ||
    die "depmod could not index the modules of $pkg"
  cands=$(awk -v a="$n" '$1 == "alias" && $2 == a { print $3 }' "$mods/modules.alias")
  [ -n "$cands" ] || die "no module provides $n in $pkg"
  { grep '_generic$' <<<"$cands" || head -n1 <<<"$cands"; } | head -n1
}

# Depth-first over `modinfo -F depends` and the "pre:" soft dependencies (modules whose
# init fails without them, e.g. libcrc32c without a crc32c), so each module comes after
# what it needs.
declare -A seen=()
order=()
add_module() {
  local name=$1 f dep
  [ -n "${seen[$name]:-}" ] && return 0
  seen[$name]=1
  # Built into this kernel: nothing to load.
  if grep -qE "/(${name}|${name//_/-})\.ko\$" "$mods/modules.builtin"; then return 0; fi
  f=$(find_ko "$name") || die "module $name is neither built in nor shipped in $pkg"
  case "$f" in *.ko) ;; *) die "module $f is compressed; busybox insmod needs plain .ko" ;; esac
  for dep in $(modinfo -F depends "$f" | tr ',' ' '); do
    add_module "$dep"
  done
  for dep in $(modinfo -F softdep "$f" | sed -n 's/.*pre:\(.*\)/\1/p' | sed 's/post:.*//'); do
    local m
    m=$(resolve_alias "$dep") || exit 1
    add_module "$m"
  done
  cp "$f" "$stage/modules/"
  order+=("$(basename "$f")")
}
for m in "${WANT_MODULES[@]}"; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$stage/modules/load.order"
base=("${order[@]}")
# Each further list holds what its modules need beyond load.order (which every guest
# loads first), so that a guest loads any one of them alone.
extra_list() {
  local out=$1 f n
  shift
  seen=()
  for f in "${base[@]}"; do n=${f%.ko}; seen[$n]=1; seen[${n//-/_}]=1; done
  order=()
  for m in "$@"; do add_module "$m"; done
  printf '%s\n' "${order[@]}" >"$stage/modules/$out"
  all+=("${order[@]}")
}
all=("${base[@]}")
extra_list lab.order "${LAB_MODULES[@]}"
extra_list sctp.order "${SCTP_MODULES[@]}"
order=("${all[@]}")
echo "$WANTED" >"$stage/modules/wanted"
echo "$kver" >"$stage/kernel.version"
echo "$pkg" >"$stage/kernel.pkg"

mkdir -p "$(dirname "$VMDIR")"
rm -rf "$VMDIR.old"
[ -d "$VMDIR" ] && mv "$VMDIR" "$VMDIR.old"
mv "$stage" "$VMDIR"
rm -rf "$VMDIR.old"
log "guest kernel $kver in $VMDIR (${vmlinux_ok:+vmlinux for PVH boot, }modules: ${order[*]:-none})"
