#!/usr/bin/env bash
# shellcheck disable=SC2016 # '${Status}' (dpkg-query) and '"$@"' (the dispatcher's text) are literal on purpose
# The Debian package, checked for real (as root, after scripts/deb.sh):
#   1. contents: exactly the expected paths, modes and owners (root:root), the pre-down.d link,
#      no maintainer scripts, man pages that render and name the commands, completions;
#   2. lintian: no errors (its whole output is printed);
#   3. install with dpkg into a throwaway root: the static binary runs, the man page renders,
#      and the real OpenVPN loads the plugin (inside a private network namespace);
#   4. upgrade to a newer package (built by deb.sh, or given): the same files, no stray ones;
#   5. purge: the root is exactly as before the install, bystander files untouched.
# Everything it makes (temporary root, namespace, OpenVPN, the newer package) is removed on any
# exit.
# Usage: bash scripts/package-check.sh [DEB [NEWER_DEB]]
#   (default DEB: target/deb/vpnfix_<Cargo version>-1_amd64.deb; without NEWER_DEB it builds
#   one with the next revision, `bash scripts/deb.sh VERSION DIR`, into its temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "package-check: $*" >&2
  exit 1
}
((EUID == 0)) || fail "run as root (dpkg into a throwaway root, a network namespace, OpenVPN)"
for tool in dpkg dpkg-deb dpkg-query lintian man openvpn ip sha256sum; do
  command -v "$tool" >/dev/null || fail "$tool is missing (.ci/run installs it)"
done

pkgid=$(cargo pkgid --locked --quiet)
deb=${1:-target/deb/vpnfix_${pkgid##*[#@]}-1_amd64.deb}
[[ -f $deb ]] || fail "$deb not found: run bash scripts/deb.sh first"
deb=$(realpath "$deb")
newer=${2:+$(realpath "$2")}

tmp=$(mktemp -d /tmp/vfpkg.XXXXXX)
chmod 0755 "$tmp" # man(1) may read as its own user
ns=vfpkg-$$
ovpn_pid=
cleanup() {
  local status=$?
  if [[ -n $ovpn_pid ]] && kill -0 "$ovpn_pid" 2>/dev/null; then
    kill "$ovpn_pid" 2>/dev/null || true
    sleep 1
    kill -9 "$ovpn_pid" 2>/dev/null || true
  fi
  # The plugin's helpers started from the throwaway root (they end with OpenVPN's socket; any
  # still there is a failure already reported, and is ended here by its pid).
  local pid
  for pid in $(helpers); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
  ((status == 0)) || echo "package-check: FAILED" >&2
}
trap cleanup EXIT
# The pids of processes running the throwaway root's vpnfix.
helpers() {
  local exe
  for exe in /proc/[0-9]*/exe; do
    [[ $(readlink "$exe" 2>/dev/null) == "$tmp/root/usr/sbin/vpnfix" ]] && echo "${exe//[^0-9]/}"
  done
  return 0
}

echo "package-check: $deb ($(stat -c %s "$deb") bytes)"
# A copy: building the newer package (step 4) must not touch what is checked.
cp "$deb" "$tmp/"
deb=$tmp/${deb##*/}

## 1. Contents.
x=$tmp/extract
dpkg-deb -x "$deb" "$x"
# The commands the packaged binary lists in --help (each has its man page; hidden ones do not).
mapfile -t commands < <("$x/usr/sbin/vpnfix" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p' | grep -vx help)
for c in plan apply cleanup; do
  [[ " ${commands[*]} " == *" $c "* ]] || fail "vpnfix --help does not list $c: ${commands[*]}"
done

expected_files() {
  echo "-rwxr-xr-x ./usr/sbin/vpnfix"
  echo "-rw-r--r-- ./usr/lib/x86_64-linux-gnu/openvpn/plugins/vpnfix.so"
  echo "-rwxr-xr-x ./usr/lib/NetworkManager/dispatcher.d/90-vpnfix"
  echo "lrwxrwxrwx ./usr/lib/NetworkManager/dispatcher.d/pre-down.d/90-vpnfix -> ../90-vpnfix"
  echo "-rw-r--r-- ./usr/lib/systemd/system/vpnfix-watch@.service"
  echo "-rw-r--r-- ./usr/share/man/man8/vpnfix.8.gz"
  local c f
  for c in "${commands[@]}"; do echo "-rw-r--r-- ./usr/share/man/man8/vpnfix-$c.8.gz"; done
  echo "-rw-r--r-- ./usr/share/bash-completion/completions/vpnfix"
  echo "-rw-r--r-- ./usr/share/zsh/vendor-completions/_vpnfix"
  echo "-rw-r--r-- ./usr/share/fish/vendor_completions.d/vpnfix.fish"
  echo "-rw-r--r-- ./usr/share/lintian/overrides/vpnfix"
  echo "-rw-r--r-- ./usr/share/doc/vpnfix/copyright"
  echo "-rw-r--r-- ./usr/share/doc/vpnfix/changelog.Debian.gz"
  echo "-rw-r--r-- ./usr/share/doc/vpnfix/README.md.gz"
  echo "-rw-r--r-- ./usr/share/doc/vpnfix/examples/openvpn/README.md"
  for f in openvpn/*.conf; do echo "-rw-r--r-- ./usr/share/doc/vpnfix/examples/openvpn/${f##*/}"; done
  echo "-rw-r--r-- ./usr/share/doc/vpnfix/examples/systemd/README.md"
  echo "-rw-r--r-- ./usr/share/doc/vpnfix/examples/systemd/office.conf"
  echo "-rw-r--r-- ./usr/share/doc/vpnfix/examples/systemd/openvpn-client@.service.d/vpnfix.conf"
}
# Every entry with its owner; directories are exactly the files' ancestors, root-owned 0755.
expected() {
  expected_files | while read -r mode path rest; do
    echo "$mode 0/0 $path${rest:+ $rest}"
    while [[ $path == */*/* ]]; do
      path=${path%/*}
      echo "drwxr-xr-x 0/0 $path/"
    done
  done | sort -u -k3
}
actual() { dpkg-deb --fsys-tarfile "$1" | tar -tv --numeric-owner | awk '{$3 = $4 = $5 = ""; print}' | tr -s ' ' | sort -k3; }
if ! diff <(expected) <(actual "$deb") >"$tmp/contents.diff"; then
  cat "$tmp/contents.diff" >&2
  fail "the package's contents differ from the expected list (< expected, > in the package)"
fi
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t | grep -v '^\./$' | sort | tr '\n' ' ')
[[ $control == "./control " || $control == "./control ./md5sums " ]] || fail "control members other than control/md5sums: $control"
echo "package-check: contents: $(actual "$deb" | wc -l) entries as expected, all root:root, no maintainer scripts"

# Paths are the package's: nothing outside comments still runs /usr/local/bin/vpnfix.
for f in "$x"/usr/lib/NetworkManager/dispatcher.d/90-vpnfix "$x"/usr/lib/systemd/system/vpnfix-watch@.service \
  "$x"/usr/share/doc/vpnfix/examples/openvpn/*.conf "$x"/usr/share/doc/vpnfix/examples/systemd/*/*.conf; do
  ! grep -v '^[[:space:]]*#' "$f" | grep -q /usr/local/bin/vpnfix || fail "${f#"$x"} runs /usr/local/bin/vpnfix"
done
grep -qx 'exec /usr/sbin/vpnfix "$@"' "$x/usr/lib/NetworkManager/dispatcher.d/90-vpnfix" || fail "the dispatcher script does not exec /usr/sbin/vpnfix"
grep -q '^ExecStart=/usr/sbin/vpnfix watch ' "$x/usr/lib/systemd/system/vpnfix-watch@.service" || fail "the unit does not run /usr/sbin/vpnfix"

# Man pages: each renders without a warning, the main one names every command, no hidden one.
render() { MANWIDTH=100 man --warnings -l "$1" 2>"$tmp/man.err"; [[ ! -s $tmp/man.err ]] || { cat "$tmp/man.err" >&2; fail "man warns on $1"; }; }
page=$(render "$x/usr/share/man/man8/vpnfix.8.gz")
for c in "${commands[@]}"; do
  [[ $page == *"vpnfix-$c(8)"* ]] || fail "vpnfix(8) does not name $c"
  render "$x/usr/share/man/man8/vpnfix-$c.8.gz" >"$tmp/page"
  grep -qE "^ +vpnfix-$c +- " "$tmp/page" || fail "vpnfix-$c(8) has no NAME line"
done
named=$(grep -o 'vpnfix-[a-z-]*(8)' <<<"$page" | sort -u | tr '\n' ' ')
[[ $named == "$(printf 'vpnfix-%s(8) ' "${commands[@]}" | tr ' ' '\n' | grep . | sort -u | tr '\n' ' ')" ]] ||
  fail "vpnfix(8) names other commands than --help: $named"
# Completions: non-empty, bash's parses, and its top level offers exactly --help's commands.
comp=$x/usr/share
for f in bash-completion/completions/vpnfix zsh/vendor-completions/_vpnfix fish/vendor_completions.d/vpnfix.fish; do
  if [[ ! -s $comp/$f ]] || ! grep -q plan "$comp/$f"; then fail "/usr/share/$f is empty or does not offer plan"; fi
done
bash -n "$comp/bash-completion/completions/vpnfix" || fail "the bash completion does not parse"
top=$(grep -m1 '^ *opts="-h -V' "$comp/bash-completion/completions/vpnfix" | tr -d '"' | tr ' ' '\n' | grep -v '^-\|^opts=\|^$' | sort | tr '\n' ' ')
[[ $top == "$(printf '%s\n' "${commands[@]}" help | sort | tr '\n' ' ')" ]] || fail "bash completes other commands than --help lists: $top"
echo "package-check: man pages render (vpnfix(8) and ${#commands[@]} commands: ${commands[*]}); completions offer them"

## 2. lintian.
# Every tag down to pedantic and info, and the overridden ones (O:) with the reason the package
# gives (debian/vpnfix.lintian-overrides). lintian exits 2 for an error tag even when it is
# overridden and shown, 1 when it could not check: an E: line or exit 1 fails.
lintian_status=0
lintian --pedantic --display-info --show-overrides "$deb" >"$tmp/lintian.out" 2>&1 || lintian_status=$?
echo "package-check: lintian says:"
sed 's/^/  /' "$tmp/lintian.out"
! grep -q '^E: ' "$tmp/lintian.out" || fail "lintian reports errors"
((lintian_status != 1)) || fail "lintian could not check the package (exit 1)"

## 3. Install into a throwaway root.
# dpkg --instdir/--admindir: the files go to $root, dpkg's database to $admin (outside the root,
# so the root's file list is only what the package and the bystanders put there). The package
# has no maintainer scripts, so nothing needs a chroot. Its one dependency (libc6, for the plugin)
# is the host's libc6 stanza, recorded in the fresh database as installed with no files: the
# binaries run here with the host's libc, and dpkg still checks the version the package needs.
root=$tmp/root
admin=$tmp/admin
mkdir -p "$admin/info" "$admin/updates" "$admin/triggers"
dpkg-query -s libc6 >"$admin/status"
touch "$admin/available" "$admin/info/libc6:amd64.list"
# Bystanders in directories the package shares: dpkg must leave them, and their directories, be.
install -D -m 0755 /dev/null "$root/usr/lib/NetworkManager/dispatcher.d/50-bystander"
install -D -m 0644 /dev/null "$root/usr/share/man/man8/bystander.8.gz"
install -D -m 0644 /dev/null "$root/usr/share/doc/bystander/copyright"
mydpkg() { dpkg --instdir="$root" --admindir="$admin" --log="$tmp/dpkg.log" "$@"; }
snapshot() {
  (cd "$root" && find . -mindepth 1 -printf '%y %m %U:%G %p %l\n' | sort &&
    find . -type f -print0 | sort -z | xargs -0r sha256sum)
}
paths() { (cd "$root" && find . -mindepth 1 -printf '%y %m %U:%G %p %l\n' | sort); }
before=$(snapshot)

mydpkg -i "$deb" >"$tmp/dpkg.out" 2>&1 || { cat "$tmp/dpkg.out" >&2; fail "dpkg -i failed"; }
version=$(dpkg-deb -f "$deb" Version)
[[ $(dpkg-query --admindir="$admin" -W -f '${Status} ${Version}' vpnfix) == "install ok installed $version" ]] ||
  fail "vpnfix is not recorded as installed"
mydpkg --verify vpnfix || fail "dpkg --verify: the installed files differ from the package's"
# What dpkg installed is the package's list: ./ and the directories aside, path for path.
listed() { dpkg-query --admindir="$admin" -L vpnfix | grep -v '^/\.$' | sort; }
diff <(expected | awk '{sub(/\/$/, "", $3); print substr($3, 2)}' | sort) <(listed) >&2 ||
  fail "dpkg -L vpnfix is not the expected list"
installed=$(paths)

bin=$root/usr/sbin/vpnfix
[[ $("$bin" --version) == "vpnfix ${version%-*}" ]] || fail "$bin --version says $("$bin" --version)"
linkage=$(ldd "$bin" 2>&1 || true)
[[ $linkage == *"not a dynamic executable"* ]] || fail "$bin is dynamic: $linkage"
size=$(stat -c %s "$bin")
((size <= 4 * 1024 * 1024)) || fail "$bin is $size bytes, over 4 MiB"
[[ $(render "$root/usr/share/man/man8/vpnfix.8.gz") == *"vpnfix-plan(8)"* ]] || fail "the installed vpnfix(8) does not render"
echo "package-check: installed $version into $root: vpnfix --version runs (static, $size bytes), vpnfix(8) renders"

# The plugin loads in the real OpenVPN. OpenVPN runs in a private network namespace, on a tun0
# of its own there (no address: --ifconfig-noexec, no route: --route-noexec), without crypto
# and with a peer that never answers: it opens its plugins, calls their up and route-up (the
# helper finds nothing pushed and changes nothing) and waits on its socket. OpenVPN 2.6 logs
# the load (plugin.c) as
#   PLUGIN_INIT: POST <so> '[<so>] [<helper>]' intercepted=PLUGIN_UP|…
# and, when the plugin's open fails, that same line followed by
#   PLUGIN_INIT: plugin initialization function failed: <so>
# and exits; at SIGTERM it closes a loaded plugin with `PLUGIN_CLOSE: <so>`. The helper keeps
# its state and configuration in $tmp (never the host's /run/vpnfix or /etc/vpnfix.conf).
so=$root/usr/lib/x86_64-linux-gnu/openvpn/plugins/vpnfix.so
log=$tmp/openvpn.log
ip netns add "$ns"
ip -n "$ns" link set lo up
own=(VPNFIX_STATE_DIR="$tmp/run" VPNFIX_CONF_FILE="$tmp/vpnfix.conf" VPNFIX_SYSLOG=off VPNFIX_WATCH=false)
setenv=()
for kv in "${own[@]}"; do setenv+=(--setenv "${kv%%=*}" "${kv#*=}"); done
ip netns exec "$ns" env "${own[@]}" openvpn --dev tun0 --dev-type tun --ifconfig-noexec --route-noexec --verb 4 \
  --proto udp --local 127.0.0.1 --lport 1194 --remote 127.0.0.1 --rport 1195 --cd "$tmp" \
  "${setenv[@]}" --plugin "$so" "$bin" --log "$log" &
ovpn_pid=$!
loaded="PLUGIN_INIT: POST $so '[$so] [$bin]' intercepted="
for _ in $(seq 50); do
  grep -qF "$loaded" "$log" 2>/dev/null && break
  kill -0 "$ovpn_pid" 2>/dev/null || break
  sleep 0.1
done
sleep 2 # past the open: a failed one logs its failure and OpenVPN exits at once
plugin_lines() { grep -E 'PLUGIN|Exiting|exiting|ERROR' "$log" | sed 's/^/  /' || true; }
if ! grep -qF "$loaded" "$log" || grep -q 'plugin initialization function failed' "$log" || ! kill -0 "$ovpn_pid" 2>/dev/null; then
  echo "package-check: OpenVPN's log (its plugin lines):" >&2
  plugin_lines >&2
  fail "OpenVPN did not load the plugin: expected a line starting '$loaded', no 'PLUGIN_INIT: plugin initialization function failed', and OpenVPN still running"
fi
kill "$ovpn_pid"
for _ in $(seq 100); do kill -0 "$ovpn_pid" 2>/dev/null || break; sleep 0.1; done
ovpn_status=0
wait "$ovpn_pid" || ovpn_status=$?
ovpn_pid=
grep -qF "PLUGIN_CLOSE: $so" "$log" || { plugin_lines >&2; fail "OpenVPN did not close the plugin at SIGTERM (no 'PLUGIN_CLOSE: $so')"; }
((ovpn_status == 0)) || { plugin_lines >&2; fail "OpenVPN exited with $ovpn_status at SIGTERM"; }
for _ in $(seq 50); do [[ -z $(helpers) ]] && break; sleep 0.1; done
[[ -z $(helpers) ]] || fail "the plugin's helper still runs after OpenVPN exited: pids $(helpers)"
ip netns del "$ns"
echo "package-check: OpenVPN loaded the installed plugin with the installed helper, and closed it:"
plugin_lines
# The snippet's bare `plugin vpnfix.so` resolves against OpenVPN's built-in plugin directory
# (plugin.c, PLUGIN_LIBDIR): it must be where the package puts the plugin.
plugindir=/usr/lib/x86_64-linux-gnu/openvpn/plugins
grep -qaF "$plugindir" "$(command -v openvpn)" || fail "OpenVPN's plugin directory is not $plugindir: plugin vpnfix.so would not find the package's"
grep -qx 'plugin vpnfix.so' "$x/usr/share/doc/vpnfix/examples/openvpn/vpnfix-plugin.conf" || fail "vpnfix-plugin.conf has no 'plugin vpnfix.so' line"

## 4. Upgrade to a newer package over the installed one.
if [[ -z $newer ]]; then
  revision=${version##*-}
  [[ $revision =~ ^[0-9]+$ ]] || fail "cannot make a newer version from $version: give NEWER_DEB"
  bash scripts/deb.sh "${version%-*}-$((revision + 1))" "$tmp/newer" >"$tmp/deb.out" 2>&1 || { cat "$tmp/deb.out" >&2; fail "deb.sh could not build the newer package"; }
  newer=$(tail -n 1 "$tmp/deb.out")
fi
newer_version=$(dpkg-deb -f "$newer" Version)
dpkg --compare-versions "$newer_version" gt "$version" || fail "$newer ($newer_version) is not newer than $version"
mydpkg -i "$newer" >"$tmp/dpkg.out" 2>&1 || { cat "$tmp/dpkg.out" >&2; fail "dpkg -i (upgrade) failed"; }
[[ $(dpkg-query --admindir="$admin" -W -f '${Status} ${Version}' vpnfix) == "install ok installed $newer_version" ]] ||
  fail "the upgrade to $newer_version is not recorded"
mydpkg --verify vpnfix || fail "dpkg --verify after the upgrade"
diff <(echo "$installed") <(paths) >&2 || fail "the upgrade left other files than the install (< install, > upgrade)"
diff <(expected | awk '{sub(/\/$/, "", $3); print substr($3, 2)}' | sort) <(listed) >&2 || fail "dpkg -L after the upgrade"
echo "package-check: upgraded $version -> $newer_version: the same $(listed | wc -l) paths, no stray file"

## 5. Purge.
mydpkg --purge vpnfix >"$tmp/dpkg.out" 2>&1 || { cat "$tmp/dpkg.out" >&2; fail "dpkg --purge failed"; }
[[ -z $(dpkg-query --admindir="$admin" -W -f '${Status}' vpnfix 2>/dev/null) ]] || fail "vpnfix is still in dpkg's database after purge"
diff <(echo "$before") <(snapshot) >&2 || fail "after purge the root differs from before the install (< before, > after)"
echo "package-check: purged: the root is exactly as before the install, bystanders untouched"
echo "package-check: ${deb##*/} passed"
