#!/usr/bin/env bash
# scripts/bench/run.sh — vpnfix's performance, each figure side by side with what it is held
# against, in one command (as root):
#
#   bash scripts/bench/run.sh           build the static release, measure everything (~10 min)
#   bash scripts/bench/run.sh --only N  just comparison N (1–4) below
#   bash scripts/bench/run.sh --quick   debug build, few runs, small sizes (< 1 min after `cargo
#                                       test` and `cargo bench --no-run`, as in CI): checks that
#                                       the measurements still work; its figures mean nothing
#
#   1. the hook end to end: a cold `vpnfix` route-up in the seed case (bridge 172.20.0.0/16 with
#      .2–.4 used, tun0 10.0.1.65 peer 10.0.1.66, push 172.20.0.0/16 → 8 routes) against a shell
#      script running the manual fix's 8 `ip route add`, both inside the namespace (hyperfine runs
#      there itself), with a real dockerd 20.10 (network milvus_default, 3 containers) and with its
#      socket absent. Targets: ratio of medians ≤ 0.3 and ≤ 0.2.
#   2. scale: criterion's `plan/full` (10,000 pushes, 200 networks, 100,000 routes) ≤ 50 ms, and
#      the peak RSS of `vpnfix plan --from` on that host as a bundle ≤ 32 MiB (/usr/bin/time -v).
#   3. 10,000 routes: `vpnfix apply` (a whole connect: sweep, dumps, plan, state, adds, route-get
#      checks, state) against `ip -batch` adding the same routes, and `vpnfix cleanup` against
#      `ip -batch` deleting them. Target: ≤ 1.5× each.
#   4. size: the stripped static binary ≤ 4 MiB; `vpnfix --version` within 2× of /bin/true.
#   5. the watcher (scripts/bench/watch.sh): Docker's start event → route (median ≤ 20 ms) beside
#      `docker start`'s own time; idle wake-ups (0) and RSS (≤ 10 MiB); a burst of 50 starts
#      (the table final ≤ 200 ms after the last event, ≤ 5 reconciles).
#   6. the OpenVPN plugin (examples/plugin_bench.rs): a seed-case route-up as the plugin sees it
#      (`openvpn_plugin_func_v3`, its helper — this binary — doing the whole reconcile) against
#      script mode's whole hook run, side by side in one process. Target: ratio ≤ 0.5.
#
# Everything runs in network namespaces made here (vfb-<pid>-*) with a private dockerd; all of
# it is removed on any exit. The machine's own namespace, routes and Docker are never touched.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ME=bench TAG=vfb-$$
# shellcheck source=../lib/world.sh
source "$ROOT/scripts/lib/world.sh"
# shellcheck source=watch.sh
source "$HERE/watch.sh"

QUICK=0 ONLY=""
while (($#)); do
	case $1 in
	--quick) QUICK=1 ;;
	--only) ONLY=${2:-} && shift && [[ $ONLY == [1-6] ]] || die "--only takes 1, 2, 3, 4, 5 or 6" ;;
	*) die "usage: $0 [--quick] [--only 1|2|3|4|5|6]" ;;
	esac
	shift
done
# part N: whether comparison N runs (all of them unless --only names one).
part() { [[ -z $ONLY || $ONLY == "$1" ]]; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it creates network namespaces)"
for c in cargo hyperfine ip perl nsenter dockerd findmnt awk /usr/bin/time "$DOCKER"; do
	command -v "$c" >/dev/null || die "missing command: $c"
done
[[ -x $BUSYBOX ]] || die "missing $BUSYBOX (apt-get install busybox-static)"
setup_traps

# Each comparison is ROUNDS hyperfine runs of both commands (RUNS each, the order swapped every
# round), and its ratio the median of the rounds' ratios of medians: the machine is shared, and
# a load that comes and goes then weighs on both sides alike, as it would not on 100 runs of one
# command followed by 100 of the other.
if ((QUICK)); then
	ROUNDS=2 RUNS=3 SCALE_ROUNDS=1 SCALE_RUNS=2 USED_19S=64 SYNTH=small
else
	ROUNDS=20 RUNS=10 SCALE_ROUNDS=5 SCALE_RUNS=3 USED_19S=2048 SYNTH=full
fi
RESULTS=()
load() { awk '{printf "load average %s %s %s", $1, $2, $3}' /proc/loadavg; }
machine() {
	printf '%s, %s CPUs, %s MiB, kernel %s' "$(. /etc/os-release && echo "$PRETTY_NAME")" "$(nproc)" \
		"$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)" "$(uname -r)"
}
log "machine: $(machine); $(load)"

# ------------------------------------------------------------------------------ build ----
cd "$ROOT"
if ((QUICK)); then
	cargo build --quiet --bin vpnfix --example synth_bundle --example plugin_bench
	BIN=$ROOT/target/debug/vpnfix GEN=$ROOT/target/debug/examples/synth_bundle
	PLUGIN_BENCH=$ROOT/target/debug/examples/plugin_bench
else
	log "building the static release (and the bundle generator)"
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
		--target x86_64-unknown-linux-gnu --bin vpnfix --example synth_bundle --example plugin_bench
	BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/vpnfix
	GEN=$ROOT/target/x86_64-unknown-linux-gnu/release/examples/synth_bundle
	PLUGIN_BENCH=$ROOT/target/x86_64-unknown-linux-gnu/release/examples/plugin_bench
fi
cp "$BIN" "$WORK/vpnfix" # what is measured can no longer change under us
BIN=$WORK/vpnfix

# verdict RATIO TARGET: met or MISSED (a quick run's figures decide nothing).
verdict() {
	if ((QUICK)); then echo "quick run"; else awk -v r="$1" -v t="$2" 'BEGIN {print (r <= t) ? "met" : "MISSED"}'; fi
}
ms() { awk -v s="$1" 'BEGIN {printf "%.2f ms", s * 1000}'; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# compare LABEL TARGET ROUNDS RUNS NS|- NAME_A PREP_A CMD_A NAME_B PREP_B CMD_B: the two commands
# side by side (hyperfine -N, inside namespace NS so `ip netns exec` costs neither side, with a
# clean environment plus $BENCH_ENV; a PREP runs before each run of its command), ROUNDS
# rounds; adds the ratio A/B to the summary.
compare() {
	local label=$1 target=$2 rounds=$3 runs=$4 ns=$5 i csv a b r
	local -a A=("$6" "$7" "$8") B=("$9" "${10}" "${11}") first second wrap=()
	# shellcheck disable=SC2206
	[[ $ns != - ]] && wrap=(ip netns exec "$ns" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin $BENCH_ENV)
	: >"$WORK/rounds.txt"
	for ((i = 0; i < rounds; i++)); do
		if ((i % 2)); then first=("${B[@]}") second=("${A[@]}"); else first=("${A[@]}") second=("${B[@]}"); fi
		csv=$WORK/round.csv
		"${wrap[@]}" hyperfine -N --style none --export-csv "$csv" -w 1 -r "$runs" \
			--prepare "${first[1]}" --prepare "${second[1]}" -n "${first[0]}" "${first[2]}" -n "${second[0]}" "${second[2]}" >&2
		a=$(awk -F, -v n="${A[0]}" '$1 == n {print $4}' "$csv")
		b=$(awk -F, -v n="${B[0]}" '$1 == n {print $4}' "$csv")
		echo "$a $b" >>"$WORK/rounds.txt"
	done
	a=$(awk '{print $1}' "$WORK/rounds.txt" | median)
	b=$(awk '{print $2}' "$WORK/rounds.txt" | median)
	r=$(awk '{printf "%.6f\n", $1 / $2}' "$WORK/rounds.txt" | median)
	r=$(awk -v r="$r" 'BEGIN {printf "%.3f", r}')
	local said="target <= $target: $(verdict "$r" "$target")"
	[[ $target == - ]] && said="no target: reported"
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (%s)' "$label" "$(ms "$a")" "$(ms "$b")" "$r" "$said")")
	log "${RESULTS[-1]}   [$rounds rounds x $runs runs; $(load)]"
}
# A no-op prepare for commands that need none.
NOPREP=true
# seed_world NS: the seed laptop in NS with a private dockerd (once: parts 5 and 6 reuse part 1's
# when it ran), and reset-seed.sh, after which each run starts from the same table: no route of
# vpnfix's (86) or of the manual fix's (boot), no state.
seed_world() {
	[[ -e /run/netns/$1 ]] && return 0
	seed_laptop "$1" docker
	cat >"$WORK/reset-seed.sh" <<-EOF
		ip -n $1 route flush table main proto 86
		ip -n $1 route flush table main proto boot
		rm -f $SHM/state/*.json
	EOF
}

# --------------------------------------------------------------- 1. the hook end to end ----
if part 1; then
	NS=$TAG-seed
	log "1. the hook: seed laptop in $NS with a private dockerd"
	seed_world "$NS"
	BR=$(ip -n "$NS" -o link show type bridge | awk -F': ' '{print $2; exit}')
	cat >"$WORK/manual.sh" <<-'EOF'
		ip route add 172.20.1.0/24 dev tun0
		ip route add 172.20.2.0/23 dev tun0
		ip route add 172.20.4.0/22 dev tun0
		ip route add 172.20.8.0/21 dev tun0
		ip route add 172.20.16.0/20 dev tun0
		ip route add 172.20.32.0/19 dev tun0
		ip route add 172.20.64.0/18 dev tun0
		ip route add 172.20.128.0/17 dev tun0
	EOF
	# The host's routes alone, as the manual fix makes them (1c adds the containers' own).
	HOOK_ENV="$(hook_env | tr '\n' ' ') VPNFIX_CONTAINER_ROUTES=false"
	for docker in present absent; do
		if [[ $docker == present ]]; then sock=$WORK/docker/docker.sock; else sock=$WORK/no-such.sock; fi
		BENCH_ENV="$HOOK_ENV DOCKER_HOST=unix://$sock"
		sh "$WORK/reset-seed.sh"
		# shellcheck disable=SC2086
		out=$(ip netns exec "$NS" env -i $BENCH_ENV "$BIN" 2>&1)
		n=$(ip -n "$NS" route show table main proto 86 | grep -c ' dev tun0' || true)
		[[ $n -eq 8 ]] || die "route-up (Docker $docker) added $n routes, not 8:"$'\n'"$out"
		if [[ $docker == present ]]; then
			grep -q "shared with docker network milvus" <<<"$out" || die "route-up did not see Docker:"$'\n'"$out"
		fi
		target=0.3
		[[ $docker == absent ]] && target=0.2
		compare "1. hook, Docker $docker: vpnfix / script" "$target" "$ROUNDS" "$RUNS" "$NS" \
			"vpnfix route-up" "sh $WORK/reset-seed.sh" "$BIN" "8 x ip route add" "sh $WORK/reset-seed.sh" "sh $WORK/manual.sh"
	done
	# 1c. The same hook with the routes inside the 3 containers (the default), against the manual
	# fix that also gives each container its 8 routes (`nsenter -t PID -n ip -batch`, as a person
	# would without a shell in the image). No target: the manual way is what vpnfix replaces.
	PIDS=$(dk inspect -f '{{.State.Pid}}' $(dk ps -q))
	sed 's/^ip route add \(.*\) dev tun0$/route add \1 via 172.20.0.1 dev eth0/' "$WORK/manual.sh" >"$WORK/inside.batch"
	cp "$WORK/manual.sh" "$WORK/manual-inside.sh"
	cp "$WORK/reset-seed.sh" "$WORK/reset-inside.sh"
	for pid in $PIDS; do
		echo "nsenter -t $pid -n ip -batch $WORK/inside.batch" >>"$WORK/manual-inside.sh"
		echo "nsenter -t $pid -n ip route flush table main proto 86" >>"$WORK/reset-inside.sh"
		echo "nsenter -t $pid -n ip route flush table main proto boot" >>"$WORK/reset-inside.sh"
	done
	BENCH_ENV="$(hook_env | tr '\n' ' ') DOCKER_HOST=unix://$WORK/docker/docker.sock"
	# This dockerd runs with --ip-forward=false; routes inside containers need the host to forward.
	ip netns exec "$NS" sysctl -qw net.ipv4.ip_forward=1
	sh "$WORK/reset-inside.sh"
	# shellcheck disable=SC2086
	out=$(ip netns exec "$NS" env -i $BENCH_ENV "$BIN" 2>&1)
	for pid in $PIDS; do
		n=$(nsenter -t "$pid" -n ip route show table main proto 86 | grep -c ' via 172.20.0.1 dev eth0' || true)
		[[ $n -eq 8 ]] || die "route-up added $n routes inside container process $pid, not 8:"$'\n'"$out"
	done
	compare "1c. hook + 3 containers: vpnfix / script" "-" "$ROUNDS" "$RUNS" "$NS" \
		"vpnfix route-up" "sh $WORK/reset-inside.sh" "$BIN" "manual fix host and inside" "sh $WORK/reset-inside.sh" "sh $WORK/manual-inside.sh"
	log "1. seed case's bridge was $BR; $(load)"
fi

# ---------------------------------------------------------------------------- 2. scale ----
if part 2; then
	log "2. scale: criterion plan/$SYNTH, then the peak memory of plan --from on that bundle"
	if ((QUICK)); then
		# Criterion's test mode: every benchmark once. It reuses the build of `cargo bench --no-run`
		# (which CI makes first); it only proves the benchmark still runs.
		cargo bench --quiet --bench plan -- --test >"$WORK/criterion.txt" 2>&1 || {
			cat "$WORK/criterion.txt" >&2
			die "the plan benchmark failed"
		}
		tail -3 "$WORK/criterion.txt" >&2
	else
		cargo bench --quiet --bench plan -- --noplot 2>&1 | tee "$WORK/criterion.txt" >&2
		# "plan/full   time:   [40.1 ms 41.2 ms 42.3 ms]" (the name may stand on a line of its own)
		est=$(grep -A1 '^plan/full' "$WORK/criterion.txt" | grep -m1 'time:' | sed 's/.*\[//; s/\].*//' |
			awk '{v = $3; u = $4; print (u == "s") ? v : (u == "ms") ? v / 1e3 : (u == "ns") ? v / 1e9 : v / 1e6}')
		[[ -n $est ]] || die "no plan/full estimate in criterion's output"
		r=$(awk -v e="$est" 'BEGIN {printf "%.3f", e / 0.050}')
		RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (target <= 1: %s)' "2. plan/full, criterion's estimate vs 50 ms" "$(ms "$est")" "50.00 ms" "$r" "$(verdict "$r" 1)")")
		log "${RESULTS[-1]}"
	fi
	"$GEN" "$WORK/bundle" "$SYNTH" >&2
	/usr/bin/time -v "$BIN" plan --from "$WORK/bundle" >/dev/null 2>"$WORK/time-v.txt" || {
		cat "$WORK/time-v.txt" >&2
		die "plan --from the synthetic bundle failed"
	}
	rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time-v.txt")
	wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time-v.txt")
	log "   plan --from $SYNTH bundle: peak RSS $rss KiB, wall $wall"
	r=$(awk -v r="$rss" 'BEGIN {printf "%.3f", r / 32768}')
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (target <= 1: %s)' "2. peak RSS of plan --from vs 32 MiB" "$rss KiB" "32768 KiB" "$r" "$(verdict "$r" 1)")")
	log "${RESULTS[-1]}"
fi

# ------------------------------------------------------------------- 3. many routes ----
if part 3; then
	NS=$TAG-scale
	log "3. many routes: bridge 10.0.0.0/8 in $NS with used addresses in $USED_19S /19s"
	new_ns "$NS"
	ip -n "$NS" link add br-scale type bridge
	ip -n "$NS" link add vfb-port type veth peer name vfb-peer
	ip -n "$NS" link set vfb-port master br-scale up
	ip -n "$NS" link set vfb-peer up
	ip -n "$NS" addr add 10.0.0.1/8 dev br-scale
	ip -n "$NS" link set br-scale up
	add_tun "$NS" 192.168.255.1 192.168.255.2
	# One used address (a permanent neighbour: no Docker here) at the start of every /19 of the
	# first $USED_19S, except 60 even ones: the VPN side of 10.0.0.0/8 is then exactly 10,000 blocks.
	awk -v g="$USED_19S" 'BEGIN { for (i = 0; i < g; i++) { if (g >= 2048 && i >= 2 && i <= 120 && i % 2 == 0) continue;
		printf "neigh add 10.%d.%d.1 lladdr 02:42:0a:%02x:%02x:01 dev br-scale nud permanent\n", int(i / 8), (i % 8) * 32, int(i / 8), (i % 8) * 32 } }' \
		>"$WORK/neigh.txt"
	ip -n "$NS" -batch "$WORK/neigh.txt"
	mkdir -m 700 "$SHM/scale-state"
	BENCH_ENV="VPNFIX_MAX_ROUTES=20000 VPNFIX_STATE_DIR=$SHM/scale-state DOCKER_HOST=unix://$WORK/no-such.sock"
	APPLY="$BIN apply --dev tun0 --route 10.0.0.0/8"
	# shellcheck disable=SC2086
	ip netns exec "$NS" env -i $BENCH_ENV $APPLY >/dev/null 2>"$WORK/apply.log" || {
		cat "$WORK/apply.log" >&2
		die "vpnfix apply failed"
	}
	# The very routes vpnfix added, for ip -batch (proto 86 too, so both sides add the same routes).
	ip -n "$NS" route show table main proto 86 | awk '{print "route add " $1 " dev " $3 " proto 86"}' >"$WORK/add.txt"
	sed 's/^route add/route del/' "$WORK/add.txt" >"$WORK/del.txt"
	routes=$(wc -l <"$WORK/add.txt")
	log "   vpnfix apply added $routes routes"
	((QUICK)) || [[ $routes -eq 10000 ]] || die "expected 10000 routes, got $routes"
	cat >"$WORK/reset-scale.sh" <<-EOF
		ip -n $NS route flush table main proto 86
		rm -f $SHM/scale-state/*.json
	EOF
	compare "3. add $routes routes: vpnfix apply / ip -batch" 1.5 "$SCALE_ROUNDS" "$SCALE_RUNS" "$NS" \
		"vpnfix apply" "sh $WORK/reset-scale.sh" "$APPLY" "ip -batch add" "sh $WORK/reset-scale.sh" "ip -batch $WORK/add.txt"
	compare "3. delete $routes routes: vpnfix cleanup / ip -batch" 1.5 "$SCALE_ROUNDS" "$SCALE_RUNS" "$NS" \
		"vpnfix cleanup" "sh -c 'sh $WORK/reset-scale.sh && $APPLY >/dev/null 2>&1'" "$BIN cleanup --dev tun0" \
		"ip -batch del" "sh -c 'sh $WORK/reset-scale.sh && ip -batch $WORK/add.txt'" "ip -batch $WORK/del.txt"
	sh "$WORK/reset-scale.sh"
	[[ -z $(ip -n "$NS" route show table main proto 86) ]] || die "routes left after the deletions"
	log "3. $(load)"
fi

# ----------------------------------------------------------------------------- 4. size ----
if part 4; then
	size=$(stat -c %s "$BIN")
	r=$(awk -v s="$size" 'BEGIN {printf "%.3f", s / 4194304}')
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (target <= 1: %s)' "4. stripped static binary vs 4 MiB" "$size B" "4194304 B" "$r" "$(verdict "$r" 1)")")
	log "${RESULTS[-1]}"
	BENCH_ENV=""
	compare "4. start-up: vpnfix --version / /bin/true" 2 "$ROUNDS" $((RUNS * 5)) - \
		"vpnfix --version" "$NOPREP" "$BIN --version" "/bin/true" "$NOPREP" "/bin/true"
fi

# -------------------------------------------------------------------------- 5. watcher ----
if part 5; then
	NS=$TAG-seed
	[[ -n $ONLY ]] && log "5. the watcher: seed laptop in $NS with a private dockerd"
	seed_world "$NS"
	if ((QUICK)); then watch_bench "$NS" 3 5; else watch_bench "$NS" 20 50; fi
	log "5. $(load)"
fi

# --------------------------------------------------------------------------- 6. plugin ----
if part 6; then
	NS=$TAG-seed
	[[ -n $ONLY ]] && log "6. the plugin: seed laptop in $NS with a private dockerd"
	seed_world "$NS"
	cp "$PLUGIN_BENCH" "$WORK/plugin_bench"
	PLUGIN_ENV="$(hook_env | tr '\n' ' ') VPNFIX_CONTAINER_ROUTES=false DOCKER_HOST=unix://$WORK/docker/docker.sock"
	# shellcheck disable=SC2086
	ip netns exec "$NS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin $PLUGIN_ENV \
		"$WORK/plugin_bench" "$BIN" "$WORK/reset-seed.sh" "$ROUNDS" "$RUNS" >"$WORK/rounds.txt" 2>"$WORK/plugin_bench.log" ||
		{ cat "$WORK/plugin_bench.log" >&2; die "the plugin benchmark failed"; }
	grep -q "shared with docker network milvus" "$WORK/plugin_bench.log" || die "the plugin's helper did not see Docker"
	a=$(awk '{print $1}' "$WORK/rounds.txt" | median)
	b=$(awk '{print $2}' "$WORK/rounds.txt" | median)
	r=$(awk '{printf "%.6f\n", $1 / $2}' "$WORK/rounds.txt" | median)
	r=$(awk -v r="$r" 'BEGIN {printf "%.3f", r}')
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (target <= 0.5: %s)' "6. route-up: plugin / script" "$(ms "$a")" "$(ms "$b")" "$r" "$(verdict "$r" 0.5)")")
	log "${RESULTS[-1]}   [$ROUNDS rounds x $RUNS runs; $(load)]"
fi

# --------------------------------------------------------------------------- summary ----
echo
echo "vpnfix performance ($( ((QUICK)) && echo "QUICK: a check that the measurements run, not a measurement" || echo "full run"))"
echo "machine: $(machine); at the end $(load)"
printf '%s\n' "${RESULTS[@]}"
