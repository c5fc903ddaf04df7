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
# Everything happens in network namespaces named vfx-* that this script creates and
# deletes again; dockerd runs with its own socket/data/exec dirs under a mktemp -d
# directory. The host's own namespace, routes and Docker are never touched.
#
# Usage (as root):  bash examples/make-bundles.sh
# Needs: iproute2, perl (to hold tun0 open), ping, nsenter, dockerd 20.10, busybox-static.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUSYBOX=${BUSYBOX:-/bin/busybox}
# The Debian client matches dockerd 20.10; a newer client (28.x in /usr/local/bin)
# refuses to talk to API 1.41 unless told to, so pin the version for either.
DOCKER=${DOCKER:-/usr/bin/docker}
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)
export DOCKER_API_VERSION=1.41
unset DOCKER_HOST DOCKER_CONTEXT # we always pass -H; a context would conflict with it

# Names carry our pid so a concurrent run (or a leftover of a killed one) cannot collide.
TAG=vfx-$$
NS_LB=$TAG-lb      # laptop namespace of bundle 1
NS_DK=$TAG-dk      # laptop namespace of bundle 2 (dockerd runs here)

CREATED_NS=()      # namespaces to delete, in creation order
HOLDER_PIDS=()     # processes holding tun0 open (gives it carrier, like openvpn does)
DOCKERD_PID=""
WORK=""            # mktemp -d: dockerd dirs, rootfs, staging
STAGED=()          # half-written bundle dirs inside examples/, removed on failure

log() { printf '>> %s\n' "$*" >&2; }
die() { printf 'make-bundles: %s\n' "$*" >&2; exit 1; }

dk() { "$DOCKER" -H "unix://$WORK/docker/docker.sock" "$@"; }

# ---------------------------------------------------------------- cleanup ----
# Runs on every exit (success, error, ^C): containers → dockerd → tun holders →
# namespaces → temp dirs. Each step ignores errors so later steps still run.
cleanup() {
	local rc=$? i
	set +e
	trap - EXIT INT TERM
	if [[ -n $DOCKERD_PID ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
		# SIGKILL the containers first: `sleep` as PID 1 ignores SIGTERM, so a plain
		# daemon shutdown would wait 10 s per container.
		local ids
		ids=$(dk ps -aq 2>/dev/null)
		[[ -n $ids ]] && dk rm -f $ids >/dev/null 2>&1
		dk network rm milvus_default >/dev/null 2>&1
		kill -TERM "$DOCKERD_PID" 2>/dev/null
		for ((i = 0; i < 150; i++)); do
			kill -0 "$DOCKERD_PID" 2>/dev/null || break
			sleep 0.2
		done
		kill -0 "$DOCKERD_PID" 2>/dev/null && kill -KILL "$DOCKERD_PID" 2>/dev/null
		wait "$DOCKERD_PID" 2>/dev/null
	fi
	for i in "${HOLDER_PIDS[@]}"; do
		kill "$i" 2>/dev/null
		wait "$i" 2>/dev/null
	done
	for ((i = ${#CREATED_NS[@]} - 1; i >= 0; i--)); do
		ip netns del "${CREATED_NS[i]}" 2>/dev/null
	done
	# dockerd's cgroups were put under our own parent so they can be removed here
	# (rmdir only removes empty cgroups; nothing else is touched).
	for i in /sys/fs/cgroup/*/"$TAG" /sys/fs/cgroup/"$TAG"; do
		[[ -d $i ]] && rmdir "$i" 2>/dev/null
	done
	if [[ -n $WORK && -d $WORK ]]; then
		# dockerd bind-mounts container netns files under its exec root; never
		# rm -rf through a live mount.
		findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r i; do
			umount -l "$i" 2>/dev/null
		done
		rm -rf --one-file-system "$WORK"
	fi
	for i in "${STAGED[@]}"; do rm -rf "$i"; done
	[[ $rc -ne 0 ]] && printf 'make-bundles: FAILED (exit %s); everything created was removed\n' "$rc" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers ----
[[ $(id -u) -eq 0 ]] || die "must run as root (it creates network namespaces)"
for c in ip perl ping nsenter dockerd findmnt "$DOCKER"; do
	command -v "$c" >/dev/null || die "missing command: $c"
done
[[ -x $BUSYBOX ]] || die "missing $BUSYBOX (apt-get install busybox-static)"

WORK=$(mktemp -d /tmp/vfx-bundles.XXXXXX)

new_ns() {
	ip netns add "$1"
	CREATED_NS+=("$1")
	ip -n "$1" link set lo up
}

# tun0 as OpenVPN makes it on a net30/p2p client. A tun device with nobody attached
# has NO-CARRIER and every route over it shows "linkdown"; a real tunnel has a process
# behind it, so a small perl holds the device open (it never reads or sends a packet).
add_tun() {
	local ns=$1 i
	ip -n "$ns" tuntap add dev tun0 mode tun
	ip -n "$ns" addr add 10.0.1.65 peer 10.0.1.66 dev tun0
	ip -n "$ns" link set tun0 up
	# TUNSETIFF = 0x400454ca, IFF_TUN|IFF_NO_PI = 0x1001; gives up after 15 min as a
	# backstop should this script be SIGKILLed before its cleanup runs.
	ip netns exec "$ns" perl -e '
		open(my $fh, "+<", "/dev/net/tun") or die "open /dev/net/tun: $!\n";
		my $req = pack("a16 s x22", "tun0", 0x1001);
		ioctl($fh, 0x400454ca, $req) or die "TUNSETIFF tun0: $!\n";
		sleep 900;' &
	HOLDER_PIDS+=($!)
	for ((i = 0; i < 50; i++)); do
		ip -n "$ns" link show tun0 | grep -q LOWER_UP && return 0
		sleep 0.1
	done
	die "tun0 in $ns never got carrier"
}

# The hook environment of a route-up script, modelled on
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
	out="$HERE/.$1.new.$$"
	rm -rf "$out"
	mkdir -p "$out"
	STAGED+=("$out")
}
publish() {
	local d="$HERE/.$1.new.$$"
	rm -rf "$HERE/$1"
	mv "$d" "$HERE/$1"
	log "wrote $HERE/$1: $(cd "$HERE/$1" && echo *)"
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
new_ns "$NS_DK"
mkdir -p "$WORK/docker/data" "$WORK/docker/exec" "$WORK/client"
echo '{}' >"$WORK/docker/daemon.json" # ignore any /etc/docker/daemon.json of the host
export DOCKER_CONFIG="$WORK/client" # keep the client away from ~/.docker

# nsenter --net (not `ip netns exec`, which remounts /sys and hides the cgroups).
# No iptables, no forwarding, no docker0; own socket, data, exec root, cgroup parent
# and containerd namespace so nothing is shared with a Docker of the host.
t0=$(date +%s%N)
nsenter --net="/run/netns/$NS_DK" dockerd \
	--config-file "$WORK/docker/daemon.json" \
	--iptables=false --ip-forward=false --ip-masq=false \
	--storage-driver=vfs --bridge=none \
	--data-root "$WORK/docker/data" --exec-root "$WORK/docker/exec" \
	-H "unix://$WORK/docker/docker.sock" --pidfile "$WORK/docker/docker.pid" \
	--cgroup-parent "/$TAG" \
	--containerd-namespace "$TAG" --containerd-plugins-namespace "$TAG-plugins" \
	>"$WORK/docker/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for ((i = 0; ; i++)); do
	dk version >/dev/null 2>&1 && break
	kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$WORK/docker/dockerd.log" >&2; die "dockerd exited"; }
	((i < 300)) || { tail -20 "$WORK/docker/dockerd.log" >&2; die "dockerd did not answer in 60 s"; }
	sleep 0.2
done
log "dockerd answered after $((($(date +%s%N) - t0) / 1000000)) ms"

# No registry here: a one-binary image from the static busybox.
mkdir -p "$WORK/rootfs/bin"
cp "$BUSYBOX" "$WORK/rootfs/bin/busybox"
for l in sh sleep ping; do ln -s busybox "$WORK/rootfs/bin/$l"; done
tar -C "$WORK/rootfs" -c . | dk import - local/busybox >/dev/null

# What `docker compose up` makes for project "milvus": network milvus_default and
# labelled containers, started in order so they get .2, .3, .4.
dk network create --subnet 172.20.0.0/16 \
	--label com.docker.compose.project=milvus \
	--label com.docker.compose.network=default milvus_default >/dev/null
for svc in etcd minio standalone; do
	dk run -d --network milvus_default --name "milvus-$svc" \
		--label com.docker.compose.project=milvus \
		--label com.docker.compose.service="$svc" \
		local/busybox sleep 3600 >/dev/null
done

add_tun "$NS_DK"
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
