//! Pure CIDR arithmetic: a family-tagged integer prefix for fast set work, longest-prefix
//! lookup tables, and "is there a finer prefix inside this block" queries.
//!
//! The planner decides route by route over CIDR blocks; doing that on `IpNet` values would mean
//! allocating and comparing enums on every step, so blocks are converted once, at the planner's
//! edge, into [`Prefix`] (a `u128` address, a length and the family) and back at the end.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A CIDR block as an integer: IPv4 addresses live in the low 32 bits, `v6` tells the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    /// `false` for IPv4, `true` for IPv6; first so that sorting puts IPv4 before IPv6.
    pub v6: bool,
    /// The network address, host bits zero.
    pub addr: u128,
    /// The prefix length.
    pub len: u8,
}

impl Prefix {
    /// The longest prefix length of the family (32 or 128).
    pub fn max_len(self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    /// The block of `len` bits that contains the address `addr` of the given family.
    pub fn of(v6: bool, addr: u128, len: u8) -> Prefix {
        let max = if v6 { 128 } else { 32 };
        Prefix { v6, addr: addr & mask(len, max), len }
    }

    /// The single-address block of an IP address.
    pub fn host(ip: IpAddr) -> Prefix {
        let (v6, addr) = ip_bits(ip);
        Prefix::of(v6, addr, if v6 { 128 } else { 32 })
    }

    /// The last address of the block.
    pub fn last(self) -> u128 {
        self.addr | (!mask(self.len, self.max_len()) & full(self.max_len()))
    }

    /// Whether `other` lies entirely inside `self` (equal counts).
    pub fn contains(self, other: Prefix) -> bool {
        self.v6 == other.v6 && self.len <= other.len && other.addr & mask(self.len, self.max_len()) == self.addr
    }

    /// Whether the address `addr` (of this family) is in the block.
    pub fn contains_addr(self, addr: u128) -> bool {
        addr & mask(self.len, self.max_len()) == self.addr
    }

    /// Whether the two blocks share an address (CIDR blocks either nest or are disjoint).
    pub fn overlaps(self, other: Prefix) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// The two halves of the block, or `None` for a single address.
    pub fn halves(self) -> Option<(Prefix, Prefix)> {
        if self.len >= self.max_len() {
            return None;
        }
        let len = self.len + 1;
        let bit = 1u128 << (self.max_len() - len);
        Some((Prefix { len, ..self }, Prefix { len, addr: self.addr | bit, ..self }))
    }

    /// The intersection of two blocks: the longer one when they nest.
    pub fn intersect(self, other: Prefix) -> Option<Prefix> {
        if self.contains(other) {
            Some(other)
        } else if other.contains(self) {
            Some(self)
        } else {
            None
        }
    }

    /// Back to an `IpNet`.
    pub fn to_net(self) -> IpNet {
        if self.v6 {
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(self.addr), self.len).expect("len <= 128"))
        } else {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(self.addr as u32), self.len).expect("len <= 32"))
        }
    }

    /// The first address as an `IpAddr`.
    pub fn first_ip(self) -> IpAddr {
        bits_ip(self.v6, self.addr)
    }
}

impl From<IpNet> for Prefix {
    fn from(net: IpNet) -> Prefix {
        let (v6, addr) = ip_bits(net.network());
        Prefix { v6, addr, len: net.prefix_len() }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_net().fmt(f)
    }
}

/// The family flag and integer value of an address.
pub fn ip_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// The address of a family flag and integer value.
pub fn bits_ip(v6: bool, addr: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(addr))
    } else {
        IpAddr::V4(Ipv4Addr::from(addr as u32))
    }
}

fn full(max: u8) -> u128 {
    if max == 128 {
        u128::MAX
    } else {
        (1u128 << max) - 1
    }
}

fn mask(len: u8, max: u8) -> u128 {
    full(max) & !full(max).checked_shr(len as u32).unwrap_or(0)
}

/// A dotted IPv4 netmask as a prefix length; `None` when the mask is not contiguous.
pub fn netmask_len(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// Whether the block is a whole family's worth of addresses or one of its two halves
/// (`0.0.0.0/1` + `128.0.0.0/1`, `::/1` + `8000::/1`): a default route in disguise.
pub fn is_default_or_half(net: IpNet) -> bool {
    net.prefix_len() <= 1
}

/// Whether the block is IPv6 link-local (fe80::/10), which vpnfix never contests.
pub fn is_link_local(net: IpNet) -> bool {
    match net {
        IpNet::V6(n) => n.network().segments()[0] & 0xffc0 == 0xfe80,
        IpNet::V4(_) => false,
    }
}

/// The union of blocks as the fewest CIDR blocks, sorted.
pub fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out = IpNet::aggregate(&nets.to_vec());
    out.sort();
    out
}

/// Prefixes sorted by address, answering "is any of them strictly finer than, and inside, this
/// block?" in `O(log n)`. The planner recurses into a block only when the answer is yes.
#[derive(Debug, Default)]
pub struct Bounds {
    sorted: Vec<Prefix>,
}

impl Bounds {
    /// An index over the given prefixes (duplicates are harmless).
    pub fn new(mut prefixes: Vec<Prefix>) -> Bounds {
        prefixes.sort_unstable();
        prefixes.dedup();
        Bounds { sorted: prefixes }
    }

    /// Whether a prefix of the index lies inside `block` and is longer than it.
    pub fn has_inner(&self, block: Prefix) -> bool {
        self.starting_in(block).any(|p| p.len > block.len)
    }

    /// The prefixes that start inside `block`, in order: every one inside it, and those at its
    /// first address that are as long as it or shorter (which contain it). Any aligned prefix
    /// that starts after `block`'s first address but inside it lies inside it.
    pub fn starting_in(&self, block: Prefix) -> impl Iterator<Item = Prefix> + '_ {
        let start = self.sorted.partition_point(|p| (p.v6, p.addr) < (block.v6, block.addr));
        self.sorted[start..].iter().take_while(move |p| p.v6 == block.v6 && p.addr <= block.last()).copied()
    }

    /// Whether the index holds exactly this prefix.
    pub fn holds(&self, block: Prefix) -> bool {
        self.sorted.binary_search(&block).is_ok()
    }
}

/// Values keyed by prefix with longest-prefix-match lookup, as the kernel's FIB does it.
///
/// Built for a whole main table (100,000 routes and more): a prefix holding one value (nearly
/// all) costs no allocation of its own. Keys hash with std's seeded SipHash: they include the
/// VPN server's pushes, and an unseeded fast hash (FxHash was 20 % faster on the 10,000-push
/// benchmark) would let a hostile server choose IPv6 prefixes that all share one bucket.
#[derive(Debug)]
pub struct LpmTable<T> {
    by_prefix: HashMap<Prefix, Values<T>>,
    /// Distinct prefix lengths present, per family, longest first.
    lens: [Vec<u8>; 2],
}

/// The values under one prefix: one, without a `Vec`, or several.
#[derive(Debug)]
enum Values<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> Values<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Values::One(v) => std::slice::from_ref(v),
            Values::Many(v) => v,
        }
    }
}

impl<T> Default for LpmTable<T> {
    fn default() -> Self {
        LpmTable { by_prefix: HashMap::default(), lens: [Vec::new(), Vec::new()] }
    }
}

impl<T> LpmTable<T> {
    /// Adds a value under a prefix (several values may share one).
    pub fn insert(&mut self, prefix: Prefix, value: T) {
        let lens = &mut self.lens[prefix.v6 as usize];
        if let Err(i) = lens.binary_search_by(|l| prefix.len.cmp(l)) {
            lens.insert(i, prefix.len);
        }
        match self.by_prefix.entry(prefix) {
            Entry::Vacant(e) => {
                e.insert(Values::One(value));
            }
            Entry::Occupied(mut e) => {
                let v = e.get_mut();
                *v = match std::mem::replace(v, Values::Many(Vec::new())) {
                    Values::One(first) => Values::Many(vec![first, value]),
                    Values::Many(mut all) => {
                        all.push(value);
                        Values::Many(all)
                    }
                };
            }
        }
    }

    /// The longest prefix containing `addr`, with its values.
    pub fn longest(&self, v6: bool, addr: u128) -> Option<(Prefix, &[T])> {
        self.matches(v6, addr).next()
    }

    /// Every prefix containing `addr`, longest first, with its values.
    pub fn matches(&self, v6: bool, addr: u128) -> impl Iterator<Item = (Prefix, &[T])> {
        self.lens[v6 as usize].iter().filter_map(move |&len| {
            let p = Prefix::of(v6, addr, len);
            self.by_prefix.get(&p).map(|v| (p, v.as_slice()))
        })
    }

    /// The values stored under exactly this prefix.
    pub fn get(&self, prefix: Prefix) -> &[T] {
        self.by_prefix.get(&prefix).map_or(&[], Values::as_slice)
    }

    /// Every prefix that holds values, in no particular order.
    pub fn prefixes(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.by_prefix.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::from(s.parse::<IpNet>().unwrap())
    }

    #[test]
    fn netmask_lengths() {
        let cases = [
            ("255.255.0.0", Some(16)),
            ("255.255.255.255", Some(32)),
            ("0.0.0.0", Some(0)),
            ("255.240.0.0", Some(12)),
            ("255.0.255.0", None),
            ("0.255.255.255", None),
            ("255.255.255.254", Some(31)),
        ];
        for (m, want) in cases {
            assert_eq!(netmask_len(m.parse().unwrap()), want, "{m}");
        }
    }

    #[test]
    fn prefix_basics() {
        let b = p("172.20.0.0/16");
        assert!(b.contains(p("172.20.2.0/24")));
        assert!(!p("172.20.2.0/24").contains(b));
        assert!(b.overlaps(p("172.0.0.0/8")));
        assert!(!b.overlaps(p("172.21.0.0/16")));
        assert!(!b.contains(p("::/0")), "families never mix");
        let (lo, hi) = b.halves().unwrap();
        assert_eq!((lo.to_string(), hi.to_string()), ("172.20.0.0/17".into(), "172.20.128.0/17".into()));
        assert_eq!(b.last(), u32::from("172.20.255.255".parse::<Ipv4Addr>().unwrap()) as u128);
        assert!(p("10.0.0.1/32").halves().is_none());
        assert_eq!(p("fd42:22::/64").halves().unwrap().1.to_string(), "fd42:22:0:0:8000::/65");
        assert_eq!(p("::/0").last(), u128::MAX);
        assert_eq!(p("0.0.0.0/0").last(), u32::MAX as u128);
    }

    #[test]
    fn bounds_find_only_finer_inner_prefixes() {
        let b = Bounds::new(vec![p("172.20.0.0/16"), p("172.20.2.0/24"), p("10.0.0.0/8")]);
        assert!(b.has_inner(p("172.20.0.0/16")));
        assert!(b.has_inner(p("172.20.0.0/22")));
        assert!(!b.has_inner(p("172.20.2.0/24")));
        assert!(!b.has_inner(p("172.20.4.0/22")));
        assert!(b.has_inner(p("0.0.0.0/0")));
        assert!(!b.has_inner(p("::/0")));
        assert!(b.holds(p("10.0.0.0/8")));
        let starting = |block: &str| b.starting_in(p(block)).map(|q| q.to_net().to_string()).collect::<Vec<_>>();
        assert_eq!(starting("172.20.0.0/16"), ["172.20.0.0/16", "172.20.2.0/24"], "itself, and what lies inside");
        assert_eq!(starting("172.20.2.0/23"), ["172.20.2.0/24"]);
        assert_eq!(starting("172.20.2.0/25"), ["172.20.2.0/24"], "at its first address: one containing it");
        assert_eq!(starting("172.20.2.128/25"), Vec::<String>::new(), "a containing prefix that starts before");
        assert_eq!(starting("::/0"), Vec::<String>::new(), "families never mix");
    }

    #[test]
    fn lpm_prefers_longest() {
        let mut t = LpmTable::default();
        t.insert(p("172.20.0.0/16"), "br");
        t.insert(p("172.20.2.0/24"), "tun");
        t.insert(p("0.0.0.0/0"), "eth");
        let (v6, a) = ip_bits("172.20.2.52".parse().unwrap());
        assert_eq!(t.longest(v6, a).unwrap().1, &["tun"]);
        let (v6, a) = ip_bits("172.20.3.1".parse().unwrap());
        assert_eq!(t.longest(v6, a).unwrap().1, &["br"]);
        let (v6, a) = ip_bits("8.8.8.8".parse().unwrap());
        assert_eq!(t.longest(v6, a).unwrap().1, &["eth"]);
        let (v6, a) = ip_bits("::1".parse().unwrap());
        assert!(t.longest(v6, a).is_none());
        assert_eq!(t.matches(false, u32::from(Ipv4Addr::new(172, 20, 2, 1)) as u128).count(), 3);
        // Two values under one prefix (two bridges claiming one subnet), in insertion order.
        t.insert(p("172.20.0.0/16"), "br2");
        t.insert(p("172.20.0.0/16"), "br3");
        assert_eq!(t.get(p("172.20.0.0/16")), &["br", "br2", "br3"]);
        assert_eq!(t.get(p("172.20.0.0/17")), &[] as &[&str]);
        let mut keys: Vec<String> = t.prefixes().map(|q| q.to_net().to_string()).collect();
        keys.sort();
        assert_eq!(keys, ["0.0.0.0/0", "172.20.0.0/16", "172.20.2.0/24"]);
    }

    #[test]
    fn link_local_and_default_halves() {
        assert!(is_link_local("fe80::/64".parse().unwrap()));
        assert!(is_link_local("febf::/16".parse().unwrap()));
        assert!(!is_link_local("fec0::/10".parse().unwrap()));
        assert!(is_default_or_half("128.0.0.0/1".parse().unwrap()));
        assert!(!is_default_or_half("10.0.0.0/8".parse().unwrap()));
    }
}
