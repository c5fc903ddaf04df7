#!/usr/bin/env bash
# The static release binary, proved: not a dynamic executable, at most 4 MiB, and a real
# route-up and down with an EMPTY environment (as OpenVPN runs scripts: no PATH, nothing but
# its own variables) inside a private network namespace, checked with `ip route get`.
# Usage (as root): bash scripts/static-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" cargo build --locked --release --quiet --target "$target"
bin=$PWD/target/$target/release/vpnfix

# ldd exits 1 on a static binary, after saying so.
linkage=$(ldd "$bin" 2>&1 || true)
[[ $linkage == *"not a dynamic executable"* ]] || { echo "static-check: $bin is dynamic: $linkage" >&2; exit 1; }
size=$(stat -c %s "$bin")
((size <= 4 * 1024 * 1024)) || { echo "static-check: $bin is $size bytes, over 4 MiB" >&2; exit 1; }

ns=vfstatic-$$
state=$(mktemp -d /tmp/vfstatic.XXXXXX)
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$state"; }
trap cleanup EXIT

ip netns add "$ns"
nsip() { ip -n "$ns" "$@"; }
nsip link set lo up
nsip link add br-test type bridge
nsip addr add 172.20.0.1/16 dev br-test
nsip link set br-test up
nsip neigh add 172.20.0.2 lladdr 02:42:ac:14:00:02 dev br-test nud permanent
nsip tuntap add dev tun0 mode tun
nsip addr add 10.0.1.65 peer 10.0.1.66 dev tun0
nsip link set tun0 up
before=$(nsip -j route show table main)

hook=(script_type=route-up dev=tun0 ifconfig_local=10.0.1.65 ifconfig_remote=10.0.1.66
  route_vpn_gateway=10.0.1.66 route_network_1=172.20.0.0 route_netmask_1=255.255.0.0
  route_gateway_1=10.0.1.66 "VPNFIX_STATE_DIR=$state/run")
ip netns exec "$ns" env -i "${hook[@]}" "$bin" 2>"$state/log"
dev_of() { nsip -j route get "$1" | sed -n 's/.*"dev":"\([^"]*\)".*/\1/p'; }
[[ $(dev_of 172.20.2.52) == tun0 && $(dev_of 172.20.0.2) == br-test ]] || {
  echo "static-check: route-up did not route as planned" >&2; cat "$state/log" >&2; exit 1; }
ip netns exec "$ns" env -i script_type=down dev=tun0 "VPNFIX_STATE_DIR=$state/run" "$bin" tun0 1500 0 10.0.1.65 10.0.1.66 init
[[ $(nsip -j route show table main) == "$before" ]] || { echo "static-check: down left the table changed" >&2; exit 1; }

echo "static-check: $bin is static, $size bytes; route-up and down in an empty environment routed and restored exactly"
