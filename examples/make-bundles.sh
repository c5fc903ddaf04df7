#!/usr/bin/env bash
# make-bundles.sh — regenerate the two example bundles next to this script:
#
#   laptop-bridge/  kernel only: bridge br-test 172.20.0.1/16 with three neighbours,
#                   tun0 10.0.1.65 peer 10.0.1.66, OpenVPN 2.6's prepended push
#                   172.20.0.0/16 via 10.0.1.66 dev tun0 (ties with the bridge route).
#   laptop-docker/  a real dockerd 20.10 with compose-like network milvus_default
#                   (172.20.0.0/16) and three containers, tun0 as above, and NO pushed
#                   route (old OpenVPN: `ip route add` → "File exists").
#
# Everything happens in network namespaces named vfx-<pid>-* that this script creates and
# deletes again (scripts/lib/world.sh, shared with the benchmarks); dockerd runs with its own
# socket/data/exec dirs under a mktemp -d directory. The host's own namespace, routes and
# Docker are never touched.
#
# Usage (as root):  bash examples/make-bundles.sh [OUT]   (OUT defaults to this directory)
# Needs: iproute2, perl (to hold tun0 open), ping, nsenter, dockerd 20.10, busybox-static.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(cd "${1:-$HERE}" && pwd)
ME=make-bundles TAG=vfx-$$
# shellcheck source=../scripts/lib/world.sh
source "$HERE/../scripts/lib/world.sh"
NS_LB=$TAG-lb # laptop namespace of bundle 1
NS_DK=$TAG-dk # laptop namespace of bundle 2 (dockerd runs here)
STAGED=()     # half-written bundle dirs, removed on failure

cleanup_more() {
	local i
	for i in "${STAGED[@]}"; do rm -rf "$i"; done
}
setup_traps

[[ $(id -u) -eq 0 ]] || die "must run as root (it creates network namespaces)"
for c in ip perl ping nsenter dockerd findmnt "$DOCKER"; do
	command -v "$c" >/dev/null || die "missing command: $c"
done
[[ -x $BUSYBOX ]] || die "missing $BUSYBOX (apt-get install busybox-static)"

# The whole environment a real route-up script gets (what `vpnfix snapshot` keeps of it), unlike
# world.sh's hook_env, which gives the benchmarks only the variables vpnfix reads. Modelled on
# /work/shared/fixtures/openvpn-2.6.14-client/route-up.env: net30 tunnel
# (ifconfig_remote, no ifconfig_netmask), one IPv4 push, no IPv6, no tls_*/X509_*.
write_env() {
	cat >"$1/env" <<-'EOF'
		VPNFIX_POLICY=split
		common_name=server
		config=client.conf
		daemon=1
		daemon_log_redirect=1
		dev=tun0
		dev_type=tun
		ifconfig_local=10.0.1.65
		ifconfig_remote=10.0.1.66
		proto_1=udp
		redirect_gateway=0
		remote_1=192.0.2.10
		remote_port_1=1194
		route_gateway_1=10.0.1.66
		route_net_gateway=0.0.0.0
		route_netmask_1=255.255.0.0
		route_network_1=172.20.0.0
		route_vpn_gateway=10.0.1.66
		script_context=init
		script_type=route-up
		trusted_ip=192.0.2.10
		trusted_port=1194
		tun_mtu=1500
		untrusted_ip=192.0.2.10
		untrusted_port=1194
		verb=3
	EOF
}

# The bundle files exactly as DESIGN.md defines them, taken inside the namespace.
snapshot() {
	local ns=$1 out=$2
	ip -n "$ns" -j route show table main >"$out/route.json"
	ip -n "$ns" -j -6 route show table main >"$out/route6.json"
	ip -n "$ns" -j -d link show >"$out/link.json"
	ip -n "$ns" -j addr show >"$out/addr.json"
	ip -n "$ns" -j neigh show >"$out/neigh.json"
	write_env "$out"
}

# Build into a hidden sibling dir, then swap it in, so a failed run never leaves a
# half-written bundle and a rerun simply replaces the old one.
# (Sets $out rather than printing it: a $(…) subshell could not record STAGED.)
stage() {
	out="$OUT/.$1.new.$$"
	rm -rf "$out"
	mkdir -p "$out"
	STAGED+=("$out")
}
publish() {
	local d="$OUT/.$1.new.$$"
	rm -rf "${OUT:?}/$1"
	mv "$d" "$OUT/$1"
	log "wrote $OUT/$1: $(cd "$OUT/$1" && echo *)"
}

# ------------------------------------------------- bundle 1: laptop-bridge ----
log "laptop-bridge: kernel bridge + OpenVPN 2.6 prepended push"
new_ns "$NS_LB"
ip -n "$NS_LB" link add br-test type bridge
ip -n "$NS_LB" addr add 172.20.0.1/16 dev br-test
ip -n "$NS_LB" link set br-test up

# Three "containers": small namespaces on veth ports of br-test.
for h in 2 3 4; do
	ns="$TAG-c$h"
	new_ns "$ns"
	ip -n "$NS_LB" link add "veth-c$h" type veth peer name eth0 netns "$ns"
	ip -n "$NS_LB" link set "veth-c$h" master br-test up
	ip -n "$ns" addr add "172.20.0.$h/16" dev eth0
	ip -n "$ns" link set eth0 up
done

# Neighbour states a real laptop shows: .2 just talked to (REACHABLE), .3 talked to
# a while ago (STALE — forced, instead of waiting ~30 s for it to age), .4 pinned by
# hand (PERMANENT, with its real MAC so it still answers). Pings stay on the bridge.
ip netns exec "$NS_LB" ping -c1 -W2 -q 172.20.0.2 >/dev/null
ip netns exec "$NS_LB" ping -c1 -W2 -q 172.20.0.3 >/dev/null
ip -n "$NS_LB" neigh change 172.20.0.3 dev br-test nud stale
mac4=$(ip -n "$TAG-c4" -br link show eth0 | awk '{print $3}')
ip -n "$NS_LB" neigh replace 172.20.0.4 lladdr "$mac4" dev br-test nud permanent
ip netns exec "$NS_LB" ping -c1 -W2 -q 172.20.0.4 >/dev/null

add_tun "$NS_LB"
# OpenVPN 2.6 installs pushes over netlink with NLM_F_CREATE (no EXCL): the route is
# prepended next to the bridge's identical 172.20.0.0/16 with the same metric 0.
ip -n "$NS_LB" route prepend 172.20.0.0/16 via 10.0.1.66 dev tun0
ip -n "$NS_LB" route show table main >&2

stage laptop-bridge
snapshot "$NS_LB" "$out" # no docker.json: there is no Docker in this bundle
grep -q '"state":\["REACHABLE"\]' "$out/neigh.json" || log "warning: no REACHABLE entry captured"
publish laptop-bridge

# ------------------------------------------------- bundle 2: laptop-docker ----
log "laptop-docker: dockerd in a namespace, compose network, no pushed route"
seed_laptop "$NS_DK" docker
# Old OpenVPN (or any build using the ip command) fails on the identical prefix; show
# it. Success would mean the bundle no longer models that case, so that is fatal.
if err=$(ip -n "$NS_DK" route add 172.20.0.0/16 via 10.0.1.66 dev tun0 2>&1); then
	die "ip route add of the pushed route unexpectedly succeeded"
fi
log "ip route add 172.20.0.0/16 via 10.0.1.66 dev tun0 → $err (expected)"
ip -n "$NS_DK" route show table main >&2

stage laptop-docker
snapshot "$NS_DK" "$out"
# shellcheck disable=SC2046 # one id per word is what we want
dk network inspect $(dk network ls -q) >"$out/docker.json"
publish laptop-docker

log "done"
