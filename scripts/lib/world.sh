# scripts/lib/world.sh — the throwaway worlds vpnfix's scripts build, sourced by
# scripts/bench/run.sh and examples/make-bundles.sh: network namespaces, a tun device held open
# as OpenVPN holds it, a private dockerd 20.10 with the seed case's compose network, and a
# cleanup that removes all of it on any exit. The same dockerd isolation as tests/common/mod.rs
# (own socket, data/exec roots, config file, cgroup parent and containerd namespace; started
# with nsenter --net, not ip netns exec). The host's own namespace is never touched.
#
# The sourcing script sets ME (its name in messages) and TAG (the prefix of every namespace,
# directory and cgroup made; with its pid, so concurrent runs never collide), and may define
# cleanup_more (run first on exit, for what only it makes).
# shellcheck shell=bash

ME=${ME:-vpnfix}
TAG=${TAG:-vfx-$$}
CREATED_NS=()  # namespaces to delete
HOLDER_PIDS=() # processes holding a tun device open
DOCKERD_PID=""
WORK=""        # mktemp -d: dockerd dirs, rootfs, scripts, results
SHM=""         # tmpfs directory for vpnfix's state (/run is a tmpfs on real hosts)

# Not the newest client in /usr/local/bin: Debian's matches dockerd 20.10 (API 1.41).
DOCKER=${DOCKER:-/usr/bin/docker}
[[ -x $DOCKER ]] || DOCKER=$(command -v docker || true)
BUSYBOX=${BUSYBOX:-/bin/busybox}
export DOCKER_API_VERSION=1.41
unset DOCKER_HOST DOCKER_CONTEXT # dk always passes -H; a context would conflict with it

log() { printf '>> %s\n' "$*" >&2; }
die() {
	printf '%s: %s\n' "$ME" "$*" >&2
	exit 1
}

dk() { DOCKER_CONFIG="$WORK/docker/client" "$DOCKER" -H "unix://$WORK/docker/docker.sock" "$@"; }

# Runs on every exit (success, error, ^C): containers → dockerd → tun holders → namespaces →
# temporary directories. Each step ignores errors so the later ones still run.
cleanup() {
	local rc=$? i ids
	set +e
	trap - EXIT INT TERM
	[[ $(type -t cleanup_more) == function ]] && cleanup_more
	if [[ -n $DOCKERD_PID ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
		# `sleep` as PID 1 ignores SIGTERM: kill the containers first, or stopping waits 10 s each.
		ids=$(dk ps -aq 2>/dev/null)
		[[ -n $ids ]] && dk rm -f $ids >/dev/null 2>&1
		kill -TERM "$DOCKERD_PID" 2>/dev/null
		for ((i = 0; i < 150; i++)); do
			kill -0 "$DOCKERD_PID" 2>/dev/null || break
			sleep 0.2
		done
		kill -0 "$DOCKERD_PID" 2>/dev/null && kill -KILL "$DOCKERD_PID" 2>/dev/null
		wait "$DOCKERD_PID" 2>/dev/null
	fi
	if [[ -n $WORK ]]; then
		# Leftovers of ours (containerd, shims) name our directory: killed by pid.
		for i in /proc/[0-9]*; do
			[[ ${i#/proc/} == "$$" ]] && continue
			{ tr '\0' ' ' <"$i/cmdline"; } 2>/dev/null | grep -qF "$WORK/" && kill -KILL "${i#/proc/}" 2>/dev/null
		done
	fi
	for i in "${HOLDER_PIDS[@]}"; do
		kill "$i" 2>/dev/null
		wait "$i" 2>/dev/null
	done
	for ((i = ${#CREATED_NS[@]} - 1; i >= 0; i--)); do
		# Whatever still runs there (a watcher a hook started) would keep it and its devices alive.
		ip netns pids "${CREATED_NS[i]}" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		ip netns del "${CREATED_NS[i]}" 2>/dev/null
	done
	for i in /sys/fs/cgroup/*/"$TAG" /sys/fs/cgroup/"$TAG"; do
		[[ -d $i ]] && find "$i" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	if [[ -n $WORK && -d $WORK ]]; then
		# dockerd bind-mounts container netns files under its exec root: never rm through a mount.
		findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r i; do
			umount -l "$i" 2>/dev/null
		done
		rm -rf --one-file-system "$WORK"
	fi
	[[ -n $SHM && -d $SHM ]] && rm -rf "$SHM"
	[[ $rc -ne 0 ]] && printf '%s: FAILED (exit %s); everything it created was removed\n' "$ME" "$rc" >&2
	exit "$rc"
}

setup_traps() {
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	WORK=$(mktemp -d "/tmp/$TAG.XXXXXX")
	SHM=$(mktemp -d "/dev/shm/$TAG.XXXXXX")
	chmod 700 "$SHM"
}

new_ns() {
	ip netns add "$1"
	CREATED_NS+=("$1")
	ip -n "$1" link set lo up
	# No DAD: IPv6 addresses are usable at once (the sysctl is per namespace).
	ip netns exec "$1" sysctl -q -w net.ipv6.conf.default.accept_dad=0
}

# tun0 as OpenVPN makes it on a net30/p2p client (local $2, peer $3; default the seed case's
# 10.0.1.65 peer 10.0.1.66), held open by a small perl (TUNSETIFF = 0x400454ca,
# IFF_TUN|IFF_NO_PI = 0x1001) so it has carrier; it never reads or sends a packet and gives up
# after 30 min should this script be SIGKILLed before its cleanup runs.
add_tun() {
	local ns=$1 local=${2:-10.0.1.65} peer=${3:-10.0.1.66} i
	ip -n "$ns" tuntap add dev tun0 mode tun
	ip -n "$ns" addr add "$local" peer "$peer" dev tun0
	ip -n "$ns" link set tun0 up
	ip netns exec "$ns" perl -e '
		open(my $fh, "+<", "/dev/net/tun") or die "open /dev/net/tun: $!\n";
		my $req = pack("a16 s x22", "tun0", 0x1001);
		ioctl($fh, 0x400454ca, $req) or die "TUNSETIFF: $!\n";
		sleep 1800;' &
	HOLDER_PIDS+=($!)
	for ((i = 0; i < 100; i++)); do
		ip -n "$ns" link show tun0 | grep -q LOWER_UP && return 0
		sleep 0.05
	done
	die "tun0 in $ns never got carrier"
}

# A dockerd of our own in namespace $1; waits until its socket answers.
start_dockerd() {
	local ns=$1 d="$WORK/docker" i
	mkdir -p "$d/data" "$d/exec" "$d/client"
	echo '{}' >"$d/daemon.json" # never /etc/docker/daemon.json
	nsenter --net="/run/netns/$ns" dockerd --config-file "$d/daemon.json" \
		--iptables=false --ip-forward=false --ip-masq=false --bridge=none --storage-driver=vfs \
		--data-root "$d/data" --exec-root "$d/exec" -H "unix://$d/docker.sock" \
		--pidfile "$d/docker.pid" --cgroup-parent "/$TAG" \
		--containerd-namespace "$TAG" --containerd-plugins-namespace "$TAG-plugins" \
		</dev/null >"$d/dockerd.log" 2>&1 &
	DOCKERD_PID=$!
	for ((i = 0; i < 600; i++)); do
		dk version >/dev/null 2>&1 && return 0
		kill -0 "$DOCKERD_PID" 2>/dev/null || break
		sleep 0.1
	done
	tail -20 "$d/dockerd.log" >&2
	die "dockerd did not answer"
}

# The seed case's Docker side as `docker compose up` makes it for project milvus: network
# milvus_default 172.20.0.0/16 (bridge br-<id>, 172.20.0.1) and labelled containers
# milvus-etcd, -minio, -standalone, started in order so they get .2, .3, .4, from an image made
# of the static busybox (no registry here).
make_milvus() {
	local root="$WORK/rootfs" svc l
	mkdir -p "$root/bin"
	cp "$BUSYBOX" "$root/bin/busybox"
	for l in sh sleep ping; do ln -s busybox "$root/bin/$l"; done
	tar -C "$root" -c . | dk import - local/busybox >/dev/null
	dk network create --subnet 172.20.0.0/16 --label com.docker.compose.project=milvus \
		--label com.docker.compose.network=default milvus_default >/dev/null
	for svc in etcd minio standalone; do
		# (dockerd --ip-forward=false makes `docker run` warn on stderr: kept in a log)
		dk run -d --name "milvus-$svc" --network milvus_default --label com.docker.compose.project=milvus \
			--label com.docker.compose.service="$svc" local/busybox sleep 3600 \
			>/dev/null 2>>"$WORK/docker/client.log"
	done
}

# The seed laptop in namespace $1: tun0 10.0.1.65 peer 10.0.1.66, and (with $2 = docker) the
# milvus network from a real dockerd; pushed route absent (old OpenVPN: "File exists").
seed_laptop() {
	new_ns "$1"
	add_tun "$1"
	if [[ ${2:-} == docker ]]; then
		start_dockerd "$1"
		make_milvus
	fi
}

# The route-up environment OpenVPN 2.6.14 gives its script for the seed push (net30 tunnel),
# without the watcher (comparison 5 of scripts/bench/run.sh starts it on purpose).
hook_env() {
	printf '%s\n' script_type=route-up dev=tun0 dev_type=tun tun_mtu=1500 script_context=init \
		ifconfig_local=10.0.1.65 ifconfig_remote=10.0.1.66 route_vpn_gateway=10.0.1.66 \
		route_network_1=172.20.0.0 route_netmask_1=255.255.0.0 route_gateway_1=10.0.1.66 \
		VPNFIX_POLICY=split "VPNFIX_STATE_DIR=$SHM/state" VPNFIX_WATCH=false
}
