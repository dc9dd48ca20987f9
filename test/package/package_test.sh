#!/usr/bin/env bash
# Checks the Debian packages that scripts/package.sh built: their metadata and contents, lintian,
# the binary run from the extracted package, `systemd-analyze verify` of the unit, and then a
# real `dpkg -i`, a broker started as the lmx user from the packaged settings, and a
# `dpkg --purge` that leaves the machine as it was (the lmx system user stays, as Debian does).
#   bash scripts/package.sh && sudo bash test/package/package_test.sh
# The install part needs root, and a machine without lmx of its own (packaged or not) on which
# systemd does not run (the postinst would start the service there); it is skipped on one that
# runs systemd and refuses to touch one that has lmx.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
T=$(mktemp -d /tmp/lmx-package-XXXXXX)
BROKER_PID=
installed=0

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
ok() { echo "ok - $*"; }

cleanup() {
  local rc=$?
  set +e
  [[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  if ((installed)); then
    dpkg --purge lmx liblmx-dev >/dev/null 2>&1
    rm -rf /run/lmx
  fi
  if ((rc != 0)) && [[ -s $T/broker.log ]]; then echo "--- broker log" >&2; cat "$T/broker.log" >&2; fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

arch=$(dpkg --print-architecture)
version=$(sed -n 's/^project(lmx VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
deb=build/package/packages/lmx_${version}_${arch}.deb
dev=build/package/packages/liblmx-dev_${version}_${arch}.deb
[[ -f $deb && -f $dev ]] || fail "no $deb and $dev: run scripts/package.sh first"

field() { dpkg-deb -f "$1" "$2"; }
[[ $(field "$deb" Package) == lmx ]] || fail "lmx: Package is $(field "$deb" Package)"
[[ $(field "$deb" Version) == "$version" ]] || fail "lmx: Version is $(field "$deb" Version)"
[[ $(field "$deb" Architecture) == "$arch" ]] || fail "lmx: Architecture"
[[ $(field "$deb" Section) == net ]] || fail "lmx: Section is $(field "$deb" Section)"
depends=$(field "$deb" Depends)
# Computed by dpkg-shlibdeps from the binary's libraries, with versions; adduser for the postinst.
for want in 'adduser' 'libc6 (>= ' 'libstdc++6 (>= ' 'libboost-json1.81.0' 'libssl3 (>= '; do
  [[ $depends == *"$want"* ]] || fail "lmx: Depends lacks '$want': $depends"
done
[[ $(field "$dev" Package) == liblmx-dev ]] || fail "liblmx-dev: Package"
[[ $(field "$dev" Section) == libdevel ]] || fail "liblmx-dev: Section"
for want in libboost1.81-dev libboost-json1.81-dev libssl-dev; do
  [[ $(field "$dev" Depends) == *"$want"* ]] || fail "liblmx-dev: Depends lacks $want: $(field "$dev" Depends)"
done
dpkg-deb -e "$deb" "$T/control"
[[ $(cat "$T/control/conffiles") == /etc/lmx/broker.json ]] || fail "conffiles: $(cat "$T/control/conffiles")"
for script in postinst prerm postrm; do
  [[ -x $T/control/$script ]] || fail "no executable $script"
done
ok "metadata: $depends"

dpkg-deb -c "$deb" >"$T/lmx.list"
dpkg-deb -c "$dev" >"$T/dev.list"
has() {
  grep -qE " \./${2#/}\$" "$1" || fail "$(basename "$1" .list) lacks $2"
}
for f in /usr/bin/lmx /usr/share/man/man1/lmx.1.gz /usr/share/bash-completion/completions/lmx \
  /usr/share/lmx/web/lmx.js /usr/share/lmx/web/lmx.d.ts /usr/share/lmx/web/dashboard.html \
  /usr/share/lmx/grafana/lmx-dashboard.json /lib/systemd/system/lmx.service /etc/lmx/broker.json \
  /usr/share/doc/lmx/copyright /usr/share/doc/lmx/changelog.gz /usr/share/doc/lmx/operations.md; do
  has "$T/lmx.list" "$f"
done
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
for f in /usr/include/lmx/client/client.hpp /usr/include/lmx/version.hpp /usr/include/lmx/core/protocol.hpp \
  "/usr/lib/$multiarch/liblmx_client.a" "/usr/lib/$multiarch/cmake/lmx/lmxConfig.cmake" \
  "/usr/lib/$multiarch/cmake/lmx/lmxTargets.cmake" /usr/share/doc/liblmx-dev/copyright; do
  has "$T/dev.list" "$f"
done
# Nothing of one package in the other, everything owned by root.
if grep -qE '/usr/(include|lib/.*\.a)' "$T/lmx.list"; then fail "lmx carries development files"; fi
if grep -q '/usr/bin/' "$T/dev.list"; then fail "liblmx-dev carries commands"; fi
if awk '{print $2}' "$T/lmx.list" "$T/dev.list" | grep -v '^root/root$' | grep -q .; then
  fail "files not owned by root/root"
fi
ok "contents of both packages"

lintian --fail-on error,warning --no-tag-display-limit "$deb" "$dev" >"$T/lintian" 2>&1 ||
  fail "lintian:
$(cat "$T/lintian")"
if grep -E '^[EW]:' "$T/lintian"; then fail "lintian errors or warnings"; fi
ok "lintian clean ($(grep -c '^[IN]:' "$T/lintian" || true) info or notes)"

tree=$T/tree
dpkg-deb -x "$deb" "$tree"
"$tree/usr/bin/lmx" --version | grep -q "^lmx $version (protocol " || fail "lmx --version: $("$tree/usr/bin/lmx" --version)"
"$tree/usr/bin/lmx" --version | grep -q 'Release build' || fail "not a release build: $("$tree/usr/bin/lmx" --version)"
"$tree/usr/bin/lmx" broker --config "$tree/etc/lmx/broker.json" --print-config >"$T/effective.json"
grep -q '"state-dir": "/var/lib/lmx"' "$T/effective.json" || fail "packaged settings: $(cat "$T/effective.json")"
"$tree/usr/bin/lmx" broker --listen tcp://127.0.0.1:0 --urls-file "$T/urls" 2>>"$T/broker.log" &
BROKER_PID=$!
for _ in $(seq 200); do [[ -s $T/urls ]] && break; sleep 0.05; done
[[ -s $T/urls ]] || fail "the extracted broker did not start"
out=$("$tree/usr/bin/lmx" --help >/dev/null && LMX_URL=$(cat "$T/urls") "$tree/usr/bin/lmx" run pkg -- echo held)
[[ $out == held ]] || fail "lmx run through the extracted binary: $out"
kill "$BROKER_PID"
wait "$BROKER_PID" || fail "the extracted broker did not stop cleanly"
BROKER_PID=
zcat "$tree/usr/share/man/man1/lmx.1.gz" | grep -q '^\.TH LMX 1' || fail "the man page"
ok "the extracted binary runs, serves and stops"

# The unit, checked in the tree with what it needs from this machine copied in: the targets it
# names, and kill(1) for ExecReload. Its Documentation= man page is looked up in the tree.
mkdir -p "$tree/lib/systemd/system" "$tree/bin"
cp -n /lib/systemd/system/*.target "$tree/lib/systemd/system/"
cp /bin/kill "$tree/bin/kill"
MANPATH=$tree/usr/share/man systemd-analyze verify --root="$tree" lmx.service >"$T/verify" 2>&1 || fail "systemd-analyze verify:
$(cat "$T/verify")"
if grep -v -e '^$' "$T/verify" | grep -q .; then fail "systemd-analyze verify says:
$(cat "$T/verify")"; fi
grep -q '^Type=notify$' "$tree/lib/systemd/system/lmx.service" || fail "the unit is not Type=notify"
# The sandboxing keeps systemd's exposure rating of the unit at "OK" (2.0 of 10 at most; 1.6 now).
systemd-analyze security --offline=true --root="$tree" --threshold=20 lmx.service >"$T/security" 2>&1 ||
  fail "systemd-analyze security rates the unit above 2.0:
$(tail -25 "$T/security")"
ok "systemd-analyze verify of lmx.service; security exposure $(sed -n 's/.*exposure level for lmx.service: \([0-9.]*\).*/\1/p' "$T/security")"

if (($(id -u) != 0)); then
  echo "skip - dpkg -i and --purge need root"
  exit 0
fi
if [[ -d /run/systemd/system ]]; then
  echo "skip - dpkg -i and --purge: systemd runs here, and the postinst would start lmx.service on its ports"
  exit 0
fi
# Installed, or removed with its settings kept: either is someone's, not this test's.
present() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) =~ ^(installed|config-files|half-) ]]; }
if present lmx || present liblmx-dev; then
  fail "this machine has an lmx package installed; the install test will not touch it"
fi
for path in /usr/bin/lmx /etc/lmx /var/lib/lmx /run/lmx /lib/systemd/system/lmx.service /usr/include/lmx; do
  [[ ! -e $path ]] || fail "$path exists (lmx installed from source?); the install test will not touch it"
done
# What the machine holds outside dpkg's own records, logs and caches: the same after the purge.
snapshot() {
  find /etc /usr /lib /var/lib /opt -xdev \
    \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/lib/ucf \) -prune \
    -o \( -path /etc/passwd -o -path /etc/group -o -path /etc/shadow -o -path /etc/gshadow -o -path '/etc/*-' \
    -o -path /etc/subuid -o -path /etc/subgid -o -path /etc/ld.so.cache \) -prune \
    -o -printf '%p %m %u %g\n' | sort
}
had_user=0
getent passwd lmx >/dev/null && had_user=1
snapshot >"$T/before"
installed=1
dpkg -i "$dev" "$deb" >"$T/dpkg.log" 2>&1 || fail "dpkg -i:
$(cat "$T/dpkg.log")"
[[ $(dpkg-query -W -f='${Status}' lmx) == "install ok installed" ]] || fail "lmx is not installed"
user=$(getent passwd lmx) || fail "no lmx user after the install"
IFS=: read -r _ _ uid _ _ home shell <<<"$user"
((uid < 1000)) || fail "lmx is not a system user (uid $uid)"
[[ $home == /var/lib/lmx ]] || fail "lmx's home is $home"
[[ $shell == */nologin || $shell == /bin/false ]] || fail "lmx can log in ($shell)"
getent group lmx >/dev/null || fail "no lmx group"
[[ $(stat -c '%a %U %G' /var/lib/lmx) == "700 lmx lmx" ]] || fail "/var/lib/lmx is $(stat -c '%a %U %G' /var/lib/lmx)"
[[ -f /etc/lmx/broker.json ]] || fail "no /etc/lmx/broker.json"
ok "dpkg -i: the lmx user, /var/lib/lmx 0700, /etc/lmx/broker.json"

# Started as the lmx user from the packaged settings, as the unit does (RuntimeDirectory made by
# hand: systemd is not running here); only the listeners are changed, to ephemeral ones.
install -d -o lmx -g lmx -m 0755 /run/lmx
setpriv --reuid lmx --regid lmx --init-groups -- /usr/bin/lmx broker --config /etc/lmx/broker.json \
  --listen tcp://127.0.0.1:0 --listen unix:///run/lmx/lmx.sock --urls-file /run/lmx/urls 2>>"$T/broker.log" &
BROKER_PID=$!
for _ in $(seq 200); do [[ -s /run/lmx/urls ]] && break; sleep 0.05; done
[[ -s /run/lmx/urls ]] || fail "the installed broker did not start as lmx"
[[ $(ps -o user= -p "$BROKER_PID") == lmx ]] || fail "the broker does not run as lmx"
token=$(LMX_URL=unix:///run/lmx/lmx.sock /usr/bin/lmx acquire installed --json | sed -n 's/.*"fencing_token":\([0-9]*\).*/\1/p')
[[ -n $token ]] || fail "no lock from the installed broker"
[[ $(stat -c '%U %a' /run/lmx/lmx.sock) == "lmx 660" ]] || fail "socket: $(stat -c '%U %a' /run/lmx/lmx.sock)"
state=$(find /var/lib/lmx -type f | head -1)
[[ -n $state && $(stat -c %U "$state") == lmx ]] || fail "no fencing state written by lmx in /var/lib/lmx"
kill "$BROKER_PID"
wait "$BROKER_PID" || fail "the installed broker did not stop cleanly"
BROKER_PID=
rm -rf /run/lmx
ok "the installed broker runs as lmx with the packaged settings and keeps its state in /var/lib/lmx"

dpkg --purge lmx liblmx-dev >"$T/purge.log" 2>&1 || fail "dpkg --purge:
$(cat "$T/purge.log")"
installed=0
[[ ! -e /usr/bin/lmx && ! -e /etc/lmx && ! -e /var/lib/lmx && ! -e /usr/include/lmx ]] ||
  fail "files left after the purge: $(ls -d /usr/bin/lmx /etc/lmx /var/lib/lmx /usr/include/lmx 2>/dev/null)"
snapshot >"$T/after"
if ! diff "$T/before" "$T/after" >"$T/diff"; then fail "the purge left the machine changed:
$(cat "$T/diff")"; fi
getent passwd lmx >/dev/null || ((had_user == 0)) || fail "the purge removed a user that was there before"
ok "dpkg --purge leaves the machine as it was (the lmx system user stays)"
