#!/usr/bin/env bash
# Idempotent machine setup for corehop: Debian packages, CRIU >= 4.2 from
# Debian's source tarball (checksum verified against Debian's Sources index),
# and the sysctls the lab needs. Quick when everything is already in place.
set -euo pipefail

CRIU_VERSION=4.2.1
CRIU_MIN=4.2
PREFIX=/usr/local
CACHE=${COREHOP_CACHE:-/var/cache/corehop}
# CRIU keeps its kernel-feature cache (kdat) only on a tmpfs; without it every dump and
# restore re-probes the kernel (~35 ms inside the frozen window, measured). /run is not a
# tmpfs on these machines, so CRIU is built to keep it in a small tmpfs of its own.
KDAT_DIR=/run/criu
# corehop's patches to CRIU (scripts/criu/*.patch, each says why at its top). The sha256 of
# all of them is installed next to the binary: a CRIU built without them, or with older
# ones, is rebuilt.
PATCHES=("$(dirname "$0")"/criu/*.patch)
PATCHES_SUM=$(cat "${PATCHES[@]}" | sha256sum | cut -d' ' -f1)
PATCHES_STAMP="$PREFIX/sbin/criu.patches.sha256"

log() { printf 'setup: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup: run as root (network namespaces, runc and CRIU need it)" >&2; exit 1; }

# The Debian mirror this machine already uses; never hard-code a host.
debian_mirror() {
  local m
  m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
      grep -v security | grep -oE 'https?://[^ ]+/debian/?' | head -n1)
  [ -n "$m" ] || { echo "setup: no Debian mirror found in the apt sources" >&2; exit 1; }
  echo "${m%/}"
}

PKGS=(iproute2 nftables iptables busybox-static tshark tcpdump kmod curl xz-utils ca-certificates
      build-essential pkg-config protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev
      python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev libnftables-dev libgnutls28-dev
      uuid-dev libsqlite3-dev qemu-system-x86 iputils-ping conntrack procps psmisc
      fonts-dejavu-core binutils patch
      # Programs corehop did not write: OpenVPN migrated with its TUN device (tests/openvpn.rs);
      # NextEPC's MME, run in a QEMU guest, serving corehop's RAN, HSS and SPGW (tests/nextepc.rs).
      openvpn nextepc-mme)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# runc without recommends: its recommends pull Debian's criu 3.17, which fails on these kernels.
dpkg-query -W -f='${Status}' runc 2>/dev/null | grep -q 'install ok installed' || need_runc=1
if [ ${#missing[@]} -gt 0 ] || [ -n "${need_runc:-}" ]; then
  log "installing Debian packages: ${missing[*]} ${need_runc:+runc}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || apt-get install -y -qq "${missing[@]}" >/dev/null
  [ -z "${need_runc:-}" ] || apt-get install -y -qq --no-install-recommends runc >/dev/null
fi
# Debian's criu package must not shadow ours.
if dpkg-query -W -f='${Status}' criu 2>/dev/null | grep -q 'install ok installed'; then
  apt-get remove -y -qq criu >/dev/null
fi

criu_ok() {
  local v
  v=$("$PREFIX/sbin/criu" --version 2>/dev/null | sed -n 's/^Version: //p') || return 1
  [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$CRIU_MIN" "$v" | sort -V | head -n1)" = "$CRIU_MIN" ] &&
    grep -qa "$KDAT_DIR/criu.kdat" "$PREFIX/sbin/criu" &&
    [ "$(cat "$PATCHES_STAMP" 2>/dev/null)" = "$PATCHES_SUM" ]
}

if ! criu_ok; then
  mirror=$(debian_mirror)
  mkdir -p "$CACHE"
  tarball="$CACHE/criu_${CRIU_VERSION}.orig.tar.xz"
  log "fetching the checksum of criu $CRIU_VERSION from Debian's unstable Sources index ($mirror)"
  want=$(curl -fsSL "$mirror/dists/unstable/main/source/Sources.xz" | xz -dc |
         awk -v f="criu_${CRIU_VERSION}.orig.tar.xz" '
           /^Package: /{pkg=$2} /^Checksums-Sha256:/{insec=1; next} /^[^ ]/{insec=0}
           insec && pkg=="criu" && $3==f {print $1}')
  [ -n "$want" ] || { echo "setup: criu_${CRIU_VERSION}.orig.tar.xz not listed in Debian's Sources index" >&2; exit 1; }
  if [ ! -f "$tarball" ] || [ "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$want" ]; then
    log "downloading criu_${CRIU_VERSION}.orig.tar.xz"
    curl -fsSL -o "$tarball.part" "$mirror/pool/main/c/criu/criu_${CRIU_VERSION}.orig.tar.xz"
    mv "$tarball.part" "$tarball"
  fi
  got=$(sha256sum "$tarball" | cut -d' ' -f1)
  [ "$got" = "$want" ] || { rm -f "$tarball"; echo "setup: criu tarball checksum mismatch ($got != $want)" >&2; exit 1; }
  log "checksum ok ($want); building criu (about 30 s)"
  src="$CACHE/criu-src"
  rm -rf "$src"; mkdir -p "$src"
  tar -xJf "$tarball" -C "$src" --strip-components=1
  for p in "${PATCHES[@]}"; do
    log "applying $(basename "$p")"
    patch -d "$src" -p1 -s <"$p" || { echo "setup: $p does not apply to criu $CRIU_VERSION" >&2; exit 1; }
  done
  # Debian's python3 (with python3-protobuf) must come before any pyenv python.
  (cd "$src" && PATH=/usr/bin:/bin:/usr/sbin:/sbin make -j"$(nproc)" RUNDIR="$KDAT_DIR" criu >"$CACHE/criu-build.log" 2>&1) ||
    { tail -n 30 "$CACHE/criu-build.log" >&2; echo "setup: criu build failed (log: $CACHE/criu-build.log)" >&2; exit 1; }
  install -D -m 0755 "$src/criu/criu" "$PREFIX/sbin/criu"
  echo "$PATCHES_SUM" >"$PATCHES_STAMP"
  criu_ok || { echo "setup: installed criu does not report version >= $CRIU_MIN" >&2; exit 1; }
fi
mkdir -p "$KDAT_DIR"
mountpoint -q "$KDAT_DIR" || mount -t tmpfs -o size=1m,mode=0700 corehop-criu-kdat "$KDAT_DIR"
"$PREFIX/sbin/criu" check >/dev/null 2>&1 || {
  "$PREFIX/sbin/criu" check >&2 || true
  echo "setup: 'criu check' does not pass on this kernel" >&2; exit 1; }

# The VM baseline's guest kernel and modules (Debian's linux-image-amd64, extracted).
bash "$(dirname "$0")/setup-vm.sh"

# Lazy pages across netns hosts need big pipes; forwarding for the fabric and SGi NAT.
sysctl -qw fs.pipe-max-size=4194304
sysctl -qw net.ipv4.ip_forward=1
# CRIU dumps a function's conntrack entries (also of an external netns) by walking the
# host's whole conntrack hash table, once for entries and once for expectations: ~10 ms each
# inside the frozen window with the 262144 buckets these 24 GiB machines get by default.
# A lab host tracks a few hundred flows; 16384 buckets keep the chains short for ~65k.
sysctl -qw net.netfilter.nf_conntrack_buckets=16384 ||
  log "warning: cannot size the conntrack table (nf_conntrack not loaded?); CRIU dumps will be slower"
# A restore moves the function's tasks into its cgroups; on a cgroup v2 hierarchy the first
# move waits for an RCU grace period (~10 ms of the frozen window, measured) unless the
# hierarchy favours dynamic changes (Linux 6.0+; forks and exits cost a little more).
# A remount resets the flags it does not name (nsdelegate, ...): the current ones are kept.
awk '$3 == "cgroup2" {print $2, $4}' /proc/mounts | while read -r cg2 cg2_opts; do
  case ",$cg2_opts," in *,favordynmods,*) continue ;; esac
  mount -o "remount,$cg2_opts,favordynmods" "$cg2" ||
    log "warning: cannot remount $cg2 with favordynmods; restores will be ~10 ms slower"
done
log "ok: $("$PREFIX/sbin/criu" --version | head -n1), $(runc --version | head -n1), tshark $(tshark --version 2>/dev/null | head -n1 | awk '{print $3}')"
