# scripts/bench/watch.sh — comparison 5 of scripts/bench/run.sh (sourced there): the watcher on
# the seed laptop with its private dockerd, started by a real route-up hook as OpenVPN starts it.
#
#   a. latency: from Docker's `start` event of a container at 172.20.5.10 (outside the kept
#      block) to vpnfix's route 172.20.5.0/24 on the bridge (the kernel's own timestamp of the
#      change, `ip -ts monitor route`), side by side with how long `docker start` itself takes;
#      target: median <= 20 ms.
#   b. idle: the watcher's context switches over 10 s with nothing happening (every thread's
#      /proc/PID/task/TID/schedstat) and its resident memory; targets: 0 wake-ups, <= 10 MiB.
#   c. a burst: 50 containers started at once (each in its own /24), the time from the last
#      `start` event to the last route change, and the reconciles it took (the watcher's
#      record); targets: <= 200 ms, <= 5 reconciles.
# shellcheck shell=bash

# ip_ts_ns "[2026-11-30T08:50:01.123456] ..." → nanoseconds since the epoch (ip -ts prints local time).
ip_ts_ns() { date -d "$(sed 's/^\[\([^]]*\)\].*/\1/; s/T/ /' <<<"$1")" +%s%N; }

# first_change_after T0S EVENTS MONITOR: for each round (the time `docker start` was called, and
# the time of its `start` event, in ns, one a line), the seconds from the event to the round's
# first change of a proto 86 route (negative: the change came first, the watcher having acted on
# the engine's `connect` before its `start`).
first_change_after() {
	perl -MTime::Local -e '
		sub lines { open(my $f, "<", $_[0]) or die "$_[0]: $!"; map { chomp; $_ } <$f> }
		my @t0 = lines($ARGV[0]);
		my @ev = lines($ARGV[1]);
		my @ch;
		for (lines($ARGV[2])) {
			next unless / proto 86 / && /^\[(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)\]/;
			push @ch, (timelocal($6, $5, $4, $3, $2 - 1, $1) * 1e9 + substr($7 . "000000000", 0, 9));
		}
		for my $i (0 .. $#ev) {
			my ($c) = grep { $_ >= $t0[$i] } @ch;
			printf "%.6f\n", ($c - $ev[$i]) / 1e9 if defined $c;
		}' "$1" "$2" "$3"
}

# The watcher's record field $1 (a number).
watch_field() { perl -ne "print \$1 if /\"$1\":\\s*(\\d+)/" "$SHM/state/tun0.watcher"; }

# Starts a route monitor of namespace $1 into $2 (timestamped); prints its pid.
route_monitor() {
	ip -n "$1" -ts monitor route >"$2" 2>/dev/null &
	echo $!
}

# Whether every container of the burst (172.20.11.10 …) leaves via the bridge.
all_via_bridge() {
	local i
	for ((i = 1; i <= $2; i++)); do
		ip -n "$1" route get "172.20.$((10 + i)).10" | grep -q ' dev br-' || return 1
	done
}

watch_bench() {
	local ns=$1 n=$2 burst=$3 i r t0 t1 pid mon ev lat starts=() lats=() line evns sw0 sw1 rss r0 r1 last_ev last_rt
	local sock=$WORK/docker/docker.sock
	sh "$WORK/reset-seed.sh" 2>/dev/null || true
	rm -f "$SHM/state/"*.json
	# shellcheck disable=SC2046
	ip netns exec "$ns" env -i $(hook_env) VPNFIX_WATCH=true VPNFIX_SYSLOG=off "DOCKER_HOST=unix://$sock" "$BIN" 2>"$WORK/watch-hook.log" ||
		die "route-up failed: $(cat "$WORK/watch-hook.log")"
	for ((i = 0; i < 100; i++)); do [[ -s $SHM/state/tun0.watcher ]] && break; sleep 0.05; done
	pid=$(watch_field pid)
	[[ -n $pid ]] && kill -0 "$pid" || die "no watcher after route-up: $(cat "$WORK/watch-hook.log")"
	WATCH_PID=$pid
	log "5. watcher pid $pid; $n starts, then 10 s idle, then a burst of $burst"

	# a. latency
	dk create --name vfb-late --network milvus_default --ip 172.20.5.10 local/busybox sleep 3600 >/dev/null
	mon=$(route_monitor "$ns" "$WORK/mon-a.txt")
	dk events --filter event=start --filter container=vfb-late --format '{{.TimeNano}}' >"$WORK/ev-a.txt" 2>/dev/null &
	ev=$!
	sleep 0.3
	for ((i = 0; i < n; i++)); do
		t0=$(date +%s%N)
		echo "$t0" >>"$WORK/t0-a.txt"
		dk start vfb-late >/dev/null
		t1=$(date +%s%N)
		starts+=($(((t1 - t0))))
		for ((r = 0; r < 200; r++)); do ip -n "$ns" route get 172.20.5.10 | grep -q ' dev br-' && break; sleep 0.01; done
		((r < 200)) || die "172.20.5.10 never left via the bridge"
		dk kill vfb-late >/dev/null
		for ((r = 0; r < 500; r++)); do ip -n "$ns" route get 172.20.5.10 | grep -q ' dev tun0' && break; sleep 0.01; done
		# One container started on a calm host: nothing else happened for a while.
		sleep 2.5
	done
	sleep 0.3
	kill "$mon" "$ev" 2>/dev/null
	wait "$mon" "$ev" 2>/dev/null || true
	mapfile -t evs <"$WORK/ev-a.txt"
	((${#evs[@]} == n)) || die "expected $n start events, got ${#evs[@]}"
	# Each event's first change of vpnfix's routes (the kept block carved out of the tunnel's).
	mapfile -t lats < <(first_change_after "$WORK/t0-a.txt" "$WORK/ev-a.txt" "$WORK/mon-a.txt")
	((${#lats[@]} == n)) || die "expected $n route changes after the starts, got ${#lats[@]}"
	a=$(printf '%s\n' "${lats[@]}" | median)
	b=$(printf '%s\n' "${starts[@]}" | awk '{print $1 / 1e9}' | median)
	r=$(awk -v a="$a" 'BEGIN {printf "%.3f", (a < 0 ? 0 : a) / 0.020}')
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (target <= 1: %s)' "5a. start event -> route, median vs 20 ms" "$(ms "$a")" "20.00 ms" "$r" "$(verdict "$r" 1)")")
	log "${RESULTS[-1]}"
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s' "5a. ... side by side: watcher / docker start" "$(ms "$a")" "$(ms "$b")" "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a / b}')")")
	log "${RESULTS[-1]}   [latencies s: ${lats[*]}]"
	dk rm -f vfb-late >/dev/null

	# b. idle
	sleep 2
	sw0=$(cat /proc/"$pid"/task/*/schedstat | awk '{s += $3} END {print s}')
	sleep 10
	sw1=$(cat /proc/"$pid"/task/*/schedstat | awk '{s += $3} END {print s}')
	rss=$(awk '/^VmRSS:/ {print $2}' /proc/"$pid"/status)
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (target 0: %s)' "5b. idle watcher: wake-ups in 10 s" "$((sw1 - sw0))" "0" "-" "$( ((QUICK)) && echo "quick run" || { ((sw1 == sw0)) && echo met || echo MISSED; })")")
	log "${RESULTS[-1]}"
	r=$(awk -v r="$rss" 'BEGIN {printf "%.3f", r / 10240}')
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (target <= 1: %s)' "5b. idle watcher: RSS vs 10 MiB" "$rss KiB" "10240 KiB" "$r" "$(verdict "$r" 1)")")
	log "${RESULTS[-1]}"

	# c. a burst
	for ((i = 1; i <= burst; i++)); do
		dk create --name "vfb-b$i" --network milvus_default --ip "172.20.$((10 + i)).10" local/busybox sleep 3600 >/dev/null
	done
	sleep 1.5
	r0=$(watch_field reconciles)
	mon=$(route_monitor "$ns" "$WORK/mon-c.txt")
	dk events --filter event=start --format '{{.TimeNano}}' >"$WORK/ev-c.txt" 2>/dev/null &
	ev=$!
	sleep 0.3
	seq 1 "$burst" | xargs -P "$burst" -I{} env DOCKER_CONFIG="$WORK/docker/client" "$DOCKER" -H "unix://$sock" start vfb-b{} >/dev/null
	for ((i = 0; i < 300; i++)); do
		all_via_bridge "$ns" "$burst" && break
		sleep 0.1
	done
	((i < 300)) || die "the burst's containers never all left via the bridge"
	sleep 2.5
	kill "$mon" "$ev" 2>/dev/null
	wait "$mon" "$ev" 2>/dev/null || true
	r1=$(watch_field reconciles)
	(($(wc -l <"$WORK/ev-c.txt") == burst)) || die "expected $burst start events, got $(wc -l <"$WORK/ev-c.txt")"
	last_ev=$(sort -n "$WORK/ev-c.txt" | tail -1)
	line=$(grep ' proto 86 ' "$WORK/mon-c.txt" | tail -1)
	[[ -n $line ]] || die "no route changed during the burst"
	last_rt=$(ip_ts_ns "$line")
	a=$(awk -v d="$((last_rt - last_ev))" 'BEGIN {print d / 1e9}')
	r=$(awk -v a="$a" 'BEGIN {printf "%.3f", (a < 0 ? 0 : a) / 0.200}')
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (target <= 1: %s)' "5c. burst of $burst: last event -> table, vs 200 ms" "$(ms "$a")" "200.00 ms" "$r" "$(verdict "$r" 1)")")
	log "${RESULTS[-1]}"
	r=$(awk -v n="$((r1 - r0))" 'BEGIN {printf "%.3f", n / 5}')
	RESULTS+=("$(printf '%-46s %10s vs %-10s ratio %6s  (target <= 1: %s)' "5c. burst of $burst: reconciles vs 5" "$((r1 - r0))" "5" "$r" "$(verdict "$r" 1)")")
	log "${RESULTS[-1]}   [start events over $(($(sort -n "$WORK/ev-c.txt" | tail -1) / 1000000 - $(sort -n "$WORK/ev-c.txt" | head -1) / 1000000)) ms; gaps over 150 ms: $(sort -n "$WORK/ev-c.txt" | awk 'NR > 1 && $1 - p > 150e6 {n++} {p = $1} END {print n + 0}')]"
	# shellcheck disable=SC2046
	dk rm -f $(seq -f 'vfb-b%g' 1 "$burst") >/dev/null

	# The tunnel's disconnect ends the watcher.
	# shellcheck disable=SC2046
	ip netns exec "$ns" env -i $(hook_env | sed 's/^script_type=.*/script_type=route-pre-down/') VPNFIX_SYSLOG=off \
		"DOCKER_HOST=unix://$sock" "$BIN" 2>>"$WORK/watch-hook.log" || true
	for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
	kill -0 "$pid" 2>/dev/null && die "the watcher outlived the disconnect"
	WATCH_PID=""
}
