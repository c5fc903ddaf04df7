//! Property tests. Over random hosts (bridges, Docker networks, pushes, routes, addresses,
//! `--prefer`): every proposed subnet has the size of the network it replaces and overlaps
//! nothing it must avoid, or there is no proposal and a note says why; pools overlap no push and
//! no route that is not Docker's own. Over random taken sets: the free-space search gives exactly
//! what a brute-force scan of every aligned block gives.

use super::super::free::Taken;
use super::{bridge_link, docker_net, push, route, run};
use crate::cidr::Prefix;
use crate::net::{Addr, Facts, Tunnel};
use ipnet::IpNet;
use proptest::prelude::*;

/// The IPv4 universes bridges and pushes are drawn from, so that they collide often.
const UNIVERSES: [(u32, u8); 3] = [(0x0a00_0000, 8), (0xac10_0000, 12), (0xc0a8_0000, 16)];

/// A random IPv4 block of length `len` inside universe `u`.
fn v4(u: usize, bits: u32, len: u8) -> IpNet {
    let (base, ulen) = UNIVERSES[u % 3];
    let len = len.max(ulen);
    let host = bits & (u32::MAX >> ulen);
    let p = Prefix::of(false, u128::from(base | host), len);
    p.to_net()
}

#[derive(Clone, Debug)]
struct Host {
    facts: Facts,
    prefer: Vec<String>,
}

fn block() -> impl Strategy<Value = (usize, u32, u8)> {
    (0usize..3, any::<u32>(), 8u8..=28)
}

fn host() -> impl Strategy<Value = Host> {
    (
        prop::collection::vec((block(), any::<bool>()), 1..4),
        prop::collection::vec((any::<bool>(), block(), 0u8..16), 1..4),
        prop::collection::vec(block(), 0..4),
        prop::collection::vec(block(), 0..3),
        prop::option::of(block()),
        prop::option::of((any::<u16>(), 0u8..40)),
    )
        .prop_map(|(bridges, pushes, routes, addrs, prefer, v6)| build(bridges, pushes, routes, addrs, prefer, v6))
}

type B = (usize, u32, u8);

fn build(
    bridges: Vec<(B, bool)>,
    pushes: Vec<(bool, B, u8)>,
    routes: Vec<B>,
    addrs: Vec<B>,
    prefer: Option<B>,
    v6: Option<(u16, u8)>,
) -> Host {
    let mut facts =
        Facts { tunnel: Tunnel { dev: "tun0".into(), ..Tunnel::default() }, docker: Some(vec![]), ..Facts::default() };
    let mut nets: Vec<IpNet> = Vec::new();
    for (i, ((u, bits, len), docker)) in bridges.into_iter().enumerate() {
        let n = v4(u, bits, len.max(12));
        add_bridge(&mut facts, i, n, docker);
        nets.push(n);
    }
    if let Some((word, shorten)) = v6 {
        // One IPv6 network in fd00::/8, often under a push of it.
        let n: IpNet = format!("fd{:02x}:{word:x}::/64", word >> 8).parse::<IpNet>().unwrap().trunc();
        add_bridge(&mut facts, 9, n, true);
        facts.pushes.push(push(&IpNet::new(n.addr(), 64 - shorten).unwrap().trunc().to_string()));
    }
    for (over, (u, bits, len), shorten) in pushes {
        // Half the pushes cover (or sit inside) a bridge, the others fall anywhere.
        let p = match (over, nets.get(bits as usize % nets.len())) {
            (true, Some(n)) => IpNet::new(n.addr(), n.prefix_len().saturating_sub(shorten).max(8)).unwrap().trunc(),
            _ => v4(u, bits, len),
        };
        facts.pushes.push(push(&p.to_string()));
    }
    for (u, bits, len) in routes {
        facts.routes.push(route(&v4(u, bits, len).to_string(), "eth0", Some("192.0.2.1")));
    }
    for (u, bits, _) in addrs {
        let a = v4(u, bits, 32).addr();
        facts.addrs.push(Addr { dev: "eth0".into(), addr: a, prefix_len: 32 });
    }
    let prefer = prefer.map(|(u, bits, len)| v4(u, bits, len.min(16)).to_string()).into_iter().collect();
    Host { facts, prefer }
}

fn add_bridge(facts: &mut Facts, i: usize, n: IpNet, docker: bool) {
    let dev = format!("br-{i}");
    facts.routes.push(route(&n.to_string(), &dev, None));
    facts.links.push(bridge_link(i as u32 + 2, &dev));
    if docker {
        facts.docker.as_mut().unwrap().push(docker_net(
            &format!("p{i}_default"),
            &dev,
            Some(&format!("p{i}")),
            &n.to_string(),
        ));
    }
}

/// What every new subnet must avoid.
fn must_avoid(f: &Facts) -> Vec<Prefix> {
    let mut out: Vec<Prefix> = f.routes.iter().map(|r| Prefix::from(r.dst)).collect();
    out.extend(f.pushes.iter().map(|p| Prefix::from(p.dst)));
    out.extend(f.docker.iter().flatten().flat_map(|n| &n.ipam).map(|p| Prefix::from(p.subnet)));
    out.extend(f.addrs.iter().map(|a| Prefix::host(a.addr)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn proposals_have_the_same_size_and_avoid_everything(h in host()) {
        let prefer: Vec<&str> = h.prefer.iter().map(String::as_str).collect();
        let s = run(&h.facts, &prefer, None);
        let plan = crate::plan::plan(&h.facts, &crate::config::Config::default());
        for c in &plan.conflicts {
            prop_assert!(s.networks.iter().any(|f| f.current == c.local.dst && f.bridge == c.local.dev), "conflict {} has no fix", c);
        }
        let avoid = must_avoid(&h.facts);
        let proposed: Vec<Prefix> = s.networks.iter().filter_map(|f| f.proposed).map(Prefix::from).collect();
        for f in &s.networks {
            let Some(p) = f.proposed else {
                prop_assert!(s.notes.iter().any(|n| n.contains(&format!("no free /{}", f.current.prefix_len()))), "{:?}", s.notes);
                continue;
            };
            prop_assert_eq!(p.prefix_len(), f.current.prefix_len());
            prop_assert_eq!(p.addr().is_ipv6(), f.current.addr().is_ipv6());
            let pp = Prefix::from(p);
            for a in &avoid {
                prop_assert!(!pp.overlaps(*a), "{} overlaps {} it must avoid", p, a);
            }
            prop_assert_eq!(proposed.iter().filter(|o| o.overlaps(pp)).count(), 1, "{} overlaps another proposal", p);
        }
        let pools: Vec<Prefix> = s.default_address_pools.iter().map(|p| Prefix::from(p.base)).collect();
        for (i, (pool, p)) in s.default_address_pools.iter().zip(&pools).enumerate() {
            prop_assert!(pool.size >= pool.base.prefix_len());
            for push in &h.facts.pushes {
                prop_assert!(!p.overlaps(Prefix::from(push.dst)), "pool {} overlaps push {}", pool, push);
            }
            let dockers: Vec<&str> = h.facts.docker.iter().flatten().map(|n| n.bridge.as_str()).collect();
            for r in h.facts.routes.iter().filter(|r| !dockers.contains(&r.dev.as_deref().unwrap_or_default())) {
                prop_assert!(!p.overlaps(Prefix::from(r.dst)), "pool {} overlaps route {}", pool, r);
            }
            for q in &proposed {
                prop_assert!(!p.overlaps(*q), "pool {} overlaps proposal {}", pool, q);
            }
            prop_assert!(pools[i + 1..].iter().all(|o| !o.overlaps(*p)), "pools overlap: {:?}", s.default_address_pools);
        }
    }

    #[test]
    fn lowest_free_and_free_blocks_match_a_brute_force_scan(
        taken in prop::collection::vec((0u32..4096, 20u8..=32), 0..12),
        range_len in 20u8..=24,
        range_at in 0u32..4096,
        len in 20u8..=28,
    ) {
        // Everything inside 10.0.0.0/20 (4096 addresses).
        let p = |off: u32, l: u8| Prefix::of(false, u128::from(0x0a00_0000 | off), l);
        let taken: Vec<Prefix> = taken.iter().map(|&(o, l)| p(o, l)).collect();
        let t = Taken::new(taken.clone());
        let free = |b: Prefix| !taken.iter().any(|x| x.overlaps(b));
        let range = p(range_at, range_len);
        let blocks: Vec<Prefix> = if len >= range.len {
            (0..1u32 << (len - range.len)).map(|i| p((range.addr as u32 & 0xfff) + (i << (32 - len)), len)).collect()
        } else {
            vec![]
        };
        prop_assert_eq!(t.lowest_free(range, len), blocks.iter().copied().find(|b| free(*b)));
        // free_blocks: disjoint, free, maximal, covering exactly the free /len blocks.
        let out = t.free_blocks(range, len);
        for (i, b) in out.iter().enumerate() {
            prop_assert!(free(*b) && b.len <= len && range.contains(*b));
            prop_assert!(out[i + 1..].iter().all(|o| !o.overlaps(*b)));
            if b.len > range.len {
                prop_assert!(!free(Prefix::of(false, b.addr, b.len - 1)), "{} is not maximal", b);
            }
        }
        for b in &blocks {
            prop_assert_eq!(free(*b), out.iter().any(|o| o.contains(*b)), "{}", b);
        }
    }
}
