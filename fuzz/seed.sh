#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ with real inputs: the captured OpenVPN 2.6.14 environments and
# arguments, the bundles of tests/fixtures and examples, NetworkManager's vpn-up example (the
# one src/hook/nm.rs tests) and state files as vpnfix writes them. Formats: src/fuzzing.rs.
# Re-running only adds files (named seed-*); `cargo fuzz cmin TARGET` minimizes afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fuzz/corpus
mkdir -p "$out"/{openvpn_env,nm_env,vpnc_env,wg_quick,state,bundle,plan_from_bundle,plugin_wire}

# OpenVPN: NAME.env as KEY=value lines, NAME.args one `@arg` line per argument (up/down/route-pre-down
# get six, empty ones included; route-up none); once as OpenVPN runs a script (script_type set),
# once as the down-root plugin runs `vpnfix MODE …` (no script_type).
ovpn=tests/fixtures/openvpn-2.6.14-client
for f in "$ovpn"/*.env; do
  name=$(basename "$f" .env)
  args=$(tr -d '\n' <"$ovpn/$name.args")
  {
    cat "$f"
    [[ -n $args ]] && printf '@%s\n' $args
  } >"$out/openvpn_env/seed-$name"
  {
    grep -v '^script_type=' "$f"
    printf '@%s\n' "$name"
    [[ -n $args ]] && printf '@%s\n' $args
  } >"$out/openvpn_env/seed-$name-plugin"
done
for d in tests/fixtures/bundles/* examples/laptop-*; do
  cp "$d/env" "$out/openvpn_env/seed-bundle-$(basename "$d")"
done

# OpenVPN's plugin: frames as its helper reads them (src/plugin/wire.rs): the first (open), and
# one event per captured hook with its arguments and the environment OpenVPN gives plugins (no
# script_type). Lengths and numbers are little-endian u32.
le32() { printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"; }
list() { le32 $#; for s in "$@"; do le32 "$(printf '%s' "$s" | wc -c)"; printf '%s' "$s"; done; }
printf '\001' >"$out/plugin_wire/seed-open"
declare -A hook_number=([up]=0 [down]=1 [route-up]=2 [route-pre-down]=12)
for f in "$ovpn"/*.env; do
  name=$(basename "$f" .env)
  [[ -n ${hook_number[$name]:-} ]] || continue
  mapfile -t env < <(grep -v '^script_type=' "$f")
  read -ra args <"$ovpn/$name.args" || true
  { printf '\002'; le32 "${hook_number[$name]}"; list "${args[@]}"; list "${env[@]}"; } >"$out/plugin_wire/seed-$name"
done

# vpnc-script (OpenConnect 9.01): each phase's captured environment, with the phase its hook
# file names as the argument.
for f in tests/fixtures/openconnect-9.01/*.env; do
  name=$(basename "$f" .env)
  { cat "$f"; printf '@%s\n' "$name"; } >"$out/vpnc_env/seed-$name"
done

# wg-quick: the captured hooks' `wg show` output (and the rest of each capture, as noise).
for f in tests/fixtures/wg-quick-1.0.20210914/*.txt; do
  cp "$f" "$out/wg_quick/seed-$(basename "$f" .txt)"
done
printf 'public_key=bb\nallowed_ip=172.20.0.0/16\nallowed_ip=fd00:ac14::/64\nallowed_ip=0.0.0.0/0\nerrno=0\n\n' >"$out/wg_quick/seed-uapi"

# NetworkManager: the reference's vpn-up example (§8), vpn-down, and malformed routes.
cat >"$out/nm_env/seed-vpn-up" <<'EOF'
NM_DISPATCHER_ACTION=vpn-up
CONNECTION_ID=corp-vpn
DEVICE_IFACE=wlp2s0
DEVICE_IP_IFACE=wlp2s0
IP4_ROUTE_0=192.168.1.0/24 0.0.0.0 600
IP4_NUM_ROUTES=1
VPN_IP_IFACE=tun0
VPN_IP4_ADDRESS_0=10.8.0.6/24 0.0.0.0
VPN_IP4_NUM_ADDRESSES=1
VPN_IP4_GATEWAY=0.0.0.0
VPN_IP4_ROUTE_0=10.20.0.0/16 10.8.0.1 50
VPN_IP4_ROUTE_1=172.16.0.0/12 10.8.0.1 50
VPN_IP4_NUM_ROUTES=2
VPN_IP6_ADDRESS_0=fd00:8::1006/64 ::
VPN_IP6_GATEWAY=fd00:8::1
VPN_IP6_ROUTE_0=fd00:20::/48 fd00:8::1 50
VPN_IP6_NUM_ROUTES=1
@tun0
@vpn-up
EOF
cat >"$out/nm_env/seed-vpn-down" <<'EOF'
NM_DISPATCHER_ACTION=vpn-down
VPN_IP_IFACE=tun0
VPN_IP4_NUM_ROUTES=0
@tun0
@vpn-down
EOF
cat >"$out/nm_env/seed-malformed" <<'EOF'
VPN_IP_IFACE=tun0
VPN_IP4_ROUTE_0=10.20.0.0/33 10.8.0.1 50
VPN_IP4_ROUTE_1=10.30.0.1/16 10.8.0.1 50
VPN_IP4_ROUTE_2=10.40.0.0/16 gateway 50
VPN_IP4_ROUTE_3=fd00::/64 :: 50
VPN_IP4_ROUTE_4=10.50.0.0/16 0.0.0.0 -5
VPN_IP4_ROUTE_5=10.60.0.0/16
VPN_IP4_NUM_ROUTES=4000000000
VPNFIX_POLICY=vpn
VPNFIX_MAX_ROUTES=x
@tun0
@vpn-up
EOF

# State files as StateDir::write writes them (serde_json, pretty).
cat >"$out/state/seed-connected" <<'EOF'
{
  "version": 1,
  "tunnel": "tun0",
  "routes": [
    {
      "dst": "172.20.1.0/24",
      "dev": "tun0",
      "gateway": null,
      "table": 254,
      "protocol": 86,
      "status": "added"
    },
    {
      "dst": "fd42:22::/64",
      "dev": "br-ed18261167a7",
      "gateway": "fd00:8::1",
      "table": 254,
      "protocol": 86,
      "status": "pending"
    }
  ],
  "pushes": [
    {
      "dst": "172.20.0.0/16",
      "gateway": "10.8.0.1",
      "metric": 200,
      "origin": "route_network_1"
    }
  ]
}
EOF
printf '{"version":1,"tunnel":"tun0","routes":[{"dst":"10.0.0.0/8","dev":"tap0","gateway":"10.8.0.1","table":254,"protocol":86,"status":"present"}]}' \
  >"$out/state/seed-compact"

# Bundles: the seven files joined by NUL bytes, a missing one empty. Slimmed (with jq) to the
# fields vpnfix reads, compact, and the environment to the hook's variables: the captured files
# are 20-25 kB, mostly fields nobody reads, which would make every mutation slow and the
# minimized corpus tens of MB. (The full captures stay covered by src/bundle.rs's tests and the
# golden plans.)
nonull='with_entries(select(.value != null))'
declare -A slim=(
  [route.json]="[.[] | {type, dst, gateway, dev, protocol, scope, metric,
      nexthops: (if .nexthops then [.nexthops[] | {gateway, dev} | $nonull] else null end)} | $nonull]"
  [route6.json]="[.[] | {type, dst, gateway, dev, protocol, scope, metric} | $nonull]"
  [link.json]="[.[] | {ifindex, ifname, linkinfo: (if .linkinfo then {info_kind: .linkinfo.info_kind,
      info_data: (if .linkinfo.info_data.type then {type: .linkinfo.info_data.type} else null end)} | $nonull
      else null end)} | $nonull]"
  [addr.json]="[.[] | {ifname, addr_info: [.addr_info[] | {family, local, prefixlen}]}]"
  [neigh.json]="[.[] | {dst, dev, state} | $nonull]"
  [docker.json]="[.[] | {Name, Id, Driver,
      Options: ((.Options // {}) | with_entries(select(.key == \"com.docker.network.bridge.name\"))),
      Labels: ((.Labels // {}) | with_entries(select(.key | startswith(\"com.docker.compose.\")))),
      IPAM: {Config: [(.IPAM.Config // [])[] | {Subnet, Gateway, IPRange} | $nonull]},
      Containers: ((.Containers // {}) | map_values({Name, IPv4Address, IPv6Address} | $nonull))}]"
)
hook_vars='^(script_type|dev|dev_type|redirect_gateway|net_gateway_ipv6|route_|ifconfig_|VPNFIX_)'
for d in tests/fixtures/bundles/* examples/laptop-*; do
  for t in bundle plan_from_bundle; do
    first=1
    for f in route.json route6.json link.json addr.json neigh.json docker.json env; do
      ((first)) || printf '\0'
      first=0
      [[ -f $d/$f ]] || continue
      if [[ $f == env ]]; then
        grep -E "$hook_vars" "$d/$f" || true
      else
        jq -c "${slim[$f]}" "$d/$f" | tr -d '\n'
      fi
    done >"$out/$t/seed-$(basename "$d")"
  done
done
ls "$out"/* | head -100
