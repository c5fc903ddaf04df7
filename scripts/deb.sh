#!/usr/bin/env bash
# The Debian package: vpnfix_<version>_amd64.deb with the static binary, the OpenVPN plugin, the
# NetworkManager dispatcher script, the watcher's unit, man pages, completions and the OpenVPN
# snippets ([package.metadata.deb] in Cargo.toml lists where each goes). Prints the .deb's path
# as its last line. scripts/package-check.sh checks it.
# Usage: bash scripts/deb.sh [DEB_VERSION [OUTDIR]]   (DEB_VERSION overrides Cargo's version-1,
# e.g. for an upgrade test: bash scripts/deb.sh 0.1.0-2; OUTDIR defaults to target/deb).
# Needs cargo-deb (.ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
assets=target/deb-assets
# Not target/debian: cargo-deb deletes every other version's .deb there whatever --output says,
# and package-check.sh builds a newer one beside the package it checks.
out=${2:-target/deb}

# 1. The static binary, built exactly as scripts/static-check.sh builds (and proves) it.
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" cargo build --locked --release --quiet --target "$target"
# 2. The plugin: the library's cdylib for the host, without the static flags (OpenVPN dlopens it).
cargo build --locked --release --quiet --lib
# 3. Man pages and completions from the clap definition, outside the binary (a debug build: the
# one `cargo test` has already made).
rm -rf "$assets"
mkdir -p "$assets/examples/openvpn" "$assets/examples/systemd/openvpn-client@.service.d"
cargo run --locked --quiet --example gen_assets -- "$assets"
gzip -9n "$assets"/man/*.8

# 4. Files from the tree, with the binary's path the package's. Only lines that are not comments
# change: the prose in comments names both places on purpose.
to_sbin() {
  sed -E '/^[[:space:]]*#/!s#/usr/local/bin/vpnfix#/usr/sbin/vpnfix#g' "$1" >"$2"
  if grep -v '^[[:space:]]*#' "$2" | grep -q /usr/local/bin/vpnfix; then
    echo "deb.sh: $2 still runs /usr/local/bin/vpnfix" >&2
    exit 1
  fi
}
# Files that must run the package's binary: fail if the rewrite no longer applies to them.
must_run_sbin() {
  to_sbin "$1" "$2"
  grep -v '^[[:space:]]*#' "$2" | grep -q /usr/sbin/vpnfix || {
    echo "deb.sh: $2 does not run /usr/sbin/vpnfix (has $1 changed?)" >&2
    exit 1
  }
}
cp target/release/libvpnfix.so "$assets/vpnfix.so"
must_run_sbin examples/networkmanager/90-vpnfix "$assets/90-vpnfix"
must_run_sbin examples/systemd/vpnfix-watch@.service "$assets/vpnfix-watch@.service"
# The package has the watcher's man page: `systemctl help vpnfix-watch@tun0` shows it.
sed -i '/^Description=/a Documentation=man:vpnfix-watch(8)' "$assets/vpnfix-watch@.service"
grep -q '^Documentation=' "$assets/vpnfix-watch@.service"
for conf in openvpn/*.conf; do
  to_sbin "$conf" "$assets/examples/openvpn/${conf##*/}"
done
cp openvpn/README.md "$assets/examples/openvpn/"
cp examples/systemd/README.md examples/systemd/office.conf "$assets/examples/systemd/"
to_sbin "examples/systemd/openvpn-client@.service.d/vpnfix.conf" \
  "$assets/examples/systemd/openvpn-client@.service.d/vpnfix.conf"
gzip -9n <README.md >"$assets/README.md.gz"

# 5. The Debian changelog of this build (cargo-deb compresses it to changelog.Debian.gz).
pkgid=$(cargo pkgid --locked --quiet)
version=${1:-${pkgid##*[#@]}-1}
maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml)
date=$(git log -1 --format=%aD 2>/dev/null || date -R)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf 'vpnfix (%s) unstable; urgency=medium\n\n  * Built from vpnfix %s, commit %s, by scripts/deb.sh.\n\n -- %s  %s\n' \
  "$version" "${pkgid##*[#@]}" "$commit" "$maintainer" "$date" >"$assets/changelog"

# 6. The package, from what was built above: --no-build keeps cargo-deb from building a dynamic
# binary, --target makes its `target/release/vpnfix` the static one, --no-strip leaves the
# binary byte for byte as proved (the release profile strips already). Depends comes from
# dpkg-shlibdeps on the plugin (libc6); on the static binary it finds nothing, and cargo-deb
# warns "No $auto deps for …/vpnfix": that is expected.
mkdir -p "$out"
args=(--no-build --no-strip --locked --target "$target" --output "$out")
[[ -n ${1:-} ]] && args+=(--deb-version "$1")
deb=$(cargo deb "${args[@]}" | tail -n 1)
[[ -f $deb ]] || { echo "deb.sh: cargo deb made no package ($deb)" >&2; exit 1; }
echo "$deb"
