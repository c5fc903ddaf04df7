//! Free address space: a set of taken CIDR blocks kept as sorted, merged address intervals, and
//! the two questions `suggest` asks of it — the lowest free block of a length inside a range,
//! and the free part of a pool as the fewest CIDR blocks. Pure and exact: it jumps from one taken
//! interval to the next, never walks addresses or candidate blocks one by one.

use crate::cidr::Prefix;

/// Taken address space, per family, as disjoint inclusive intervals sorted by start.
#[derive(Clone, Debug, Default)]
pub struct Taken {
    /// `[0]` IPv4, `[1]` IPv6.
    spans: [Vec<(u128, u128)>; 2],
}

impl Taken {
    /// The union of the given blocks (nested, equal and adjacent blocks merge).
    pub fn new(blocks: impl IntoIterator<Item = Prefix>) -> Taken {
        let mut t = Taken::default();
        for b in blocks {
            t.spans[b.v6 as usize].push((b.addr, b.last()));
        }
        for spans in &mut t.spans {
            normalize(spans);
        }
        t
    }

    /// Adds one block.
    pub fn add(&mut self, b: Prefix) {
        let spans = &mut self.spans[b.v6 as usize];
        spans.push((b.addr, b.last()));
        normalize(spans);
    }

    /// The first interval that ends at or after `addr`.
    fn first_ending_after(&self, v6: bool, addr: u128) -> Option<(u128, u128)> {
        let spans = &self.spans[v6 as usize];
        spans.get(spans.partition_point(|&(_, end)| end < addr)).copied()
    }

    /// Whether any taken address lies in `b` (nesting or equality counts).
    pub fn overlaps(&self, b: Prefix) -> bool {
        self.first_ending_after(b.v6, b.addr).is_some_and(|(start, _)| start <= b.last())
    }

    /// Whether every address of `b` is taken.
    fn covers(&self, b: Prefix) -> bool {
        self.first_ending_after(b.v6, b.addr).is_some_and(|(start, end)| start <= b.addr && end >= b.last())
    }

    /// The lowest block of length `len` inside `range` that overlaps nothing taken; `None` when
    /// `len` is shorter than the range or every such block is (partly) taken.
    pub fn lowest_free(&self, range: Prefix, len: u8) -> Option<Prefix> {
        if len < range.len || len > range.max_len() {
            return None;
        }
        let host_bits = u32::from(range.max_len() - len);
        // A /0 block has no step: it is the whole family, free or not.
        let step_mask = 1u128.checked_shl(host_bits).map_or(u128::MAX, |s| s - 1);
        let mut cand = range.addr;
        loop {
            let block = Prefix::of(range.v6, cand, len);
            match self.first_ending_after(range.v6, cand) {
                Some((start, end)) if start <= block.last() => {
                    // Skip past this interval, to the next aligned block.
                    let next = end.checked_add(1)?;
                    cand = if next & step_mask == 0 { next } else { (next | step_mask).checked_add(1)? };
                    if cand > range.last() {
                        return None;
                    }
                }
                _ => return Some(block),
            }
        }
    }

    /// The free part of `base` as the fewest CIDR blocks no longer than `longest` (a pool that
    /// hands out /`longest` networks can use nothing smaller), in address order.
    pub fn free_blocks(&self, base: Prefix, longest: u8) -> Vec<Prefix> {
        let mut out = Vec::new();
        if base.len <= longest {
            self.free_into(base, longest, &mut out);
        }
        out
    }

    fn free_into(&self, b: Prefix, longest: u8, out: &mut Vec<Prefix>) {
        if !self.overlaps(b) {
            out.push(b);
        } else if b.len < longest && !self.covers(b) {
            let (lo, hi) = b.halves().expect("shorter than `longest`, so it has halves");
            self.free_into(lo, longest, out);
            self.free_into(hi, longest, out);
        }
    }
}

/// Sorts intervals and merges the overlapping or adjacent ones.
fn normalize(spans: &mut Vec<(u128, u128)>) {
    spans.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
    for &(s, e) in spans.iter() {
        match out.last_mut() {
            Some(last) if last.1 == u128::MAX || s <= last.1 + 1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    *spans = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::from(s.parse::<ipnet::IpNet>().unwrap())
    }

    fn taken(list: &[&str]) -> Taken {
        Taken::new(list.iter().map(|s| p(s)))
    }

    #[test]
    fn lowest_free_jumps_over_taken_space() {
        let t = taken(&["172.17.0.0/16", "172.20.0.0/16", "172.18.3.4/32"]);
        let cases = [
            ("172.16.0.0/12", 16, Some("172.16.0.0/16")),
            ("172.17.0.0/16", 16, None),
            ("172.18.0.0/15", 16, Some("172.19.0.0/16")),
            ("172.18.0.0/15", 24, Some("172.18.0.0/24")),
            ("172.18.3.0/24", 30, Some("172.18.3.0/30")),
            ("172.18.3.4/30", 32, Some("172.18.3.5/32")),
            ("172.20.0.0/14", 15, Some("172.22.0.0/15")),
            ("172.20.0.0/16", 8, None),
            ("10.0.0.0/8", 33, None),
        ];
        for (range, len, want) in cases {
            assert_eq!(t.lowest_free(p(range), len).map(|b| b.to_string()), want.map(str::to_string), "{range} /{len}");
        }
    }

    #[test]
    fn the_top_of_a_family_does_not_overflow() {
        let t = taken(&["255.255.255.0/24", "ffff:ffff:ffff:ffff::/64"]);
        assert_eq!(t.lowest_free(p("255.255.255.0/24"), 32), None);
        assert_eq!(t.lowest_free(p("255.255.254.0/23"), 24).unwrap().to_string(), "255.255.254.0/24");
        assert_eq!(t.lowest_free(p("ffff:ffff:ffff:ffff::/64"), 96), None);
        assert_eq!(Taken::new([p("::/0")]).lowest_free(p("fd00::/8"), 64), None);
        assert_eq!(Taken::default().lowest_free(p("::/0"), 0).unwrap().to_string(), "::/0");
    }

    #[test]
    fn free_blocks_are_the_fewest_cidrs_no_longer_than_the_pool_size() {
        let t = taken(&["192.168.1.0/24", "192.168.200.7/32"]);
        let free: Vec<String> = t.free_blocks(p("192.168.0.0/16"), 20).iter().map(|b| b.to_string()).collect();
        assert_eq!(
            free,
            [
                "192.168.16.0/20",
                "192.168.32.0/19",
                "192.168.64.0/18",
                "192.168.128.0/18",
                "192.168.208.0/20",
                "192.168.224.0/19"
            ]
        );
        assert!(taken(&["10.0.0.0/8"]).free_blocks(p("10.1.0.0/16"), 24).is_empty());
        assert_eq!(Taken::default().free_blocks(p("10.1.0.0/16"), 24), [p("10.1.0.0/16")]);
    }

    #[test]
    fn merged_spans_answer_overlap_for_nested_equal_and_adjacent_blocks() {
        let t = taken(&["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "10.0.0.0/9"]);
        assert_eq!(t.spans[0].len(), 1, "adjacent halves and nested blocks merge: {:?}", t.spans[0]);
        assert!(t.overlaps(p("10.0.0.0/8")) && t.overlaps(p("10.200.3.0/24")) && t.overlaps(p("0.0.0.0/0")));
        assert!(!t.overlaps(p("11.0.0.0/8")) && !t.overlaps(p("::/0")));
    }
}
