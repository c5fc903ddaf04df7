//! What the laptop sees for an address: the device `ip route get` picks and whether a ping
//! crosses, probed for many addresses at once.

use super::World;
use std::process::{Child, Stdio};
/// What the laptop sees for one address.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The address.
    pub addr: String,
    /// The device `ip route get` picks.
    pub dev: String,
    /// Whether a ping was answered.
    pub answered: bool,
    /// Ping's result lines (errors, summary).
    pub ping: String,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: route get → dev {}; ping: {}", self.addr, self.dev, self.ping)
    }
}

impl World {
    /// Pings every address once from the laptop, all at once (`ping -c1 -W<wait>`).
    pub fn probe(&self, addrs: &[&str], wait: u32) -> Vec<Probe> {
        let pings: Vec<Child> = addrs
            .iter()
            .map(|a| {
                self.laptop
                    .cmd("ping")
                    .args(["-c1", &format!("-W{wait}"), a])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        addrs
            .iter()
            .zip(pings)
            .map(|(a, p)| {
                let out = p.wait_with_output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
                let ping = text
                    .lines()
                    .filter(|l| {
                        !l.is_empty() && !l.starts_with("PING") && !l.starts_with("---") && !l.starts_with("rtt")
                    })
                    .collect::<Vec<_>>()
                    .join(" | ");
                Probe { addr: a.to_string(), dev: self.route_get(a), answered: out.status.success(), ping }
            })
            .collect()
    }

    /// The device `ip route get` names for an address, or what `ip` said when it found none.
    pub fn route_get(&self, addr: &str) -> String {
        let out = self.laptop.ip_try(&["-j", "route", "get", addr]);
        if !out.status.success() {
            return format!("(none: {})", String::from_utf8_lossy(&out.stderr).trim());
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["dev"].as_str().unwrap_or("(none)").to_string()
    }

    /// Asserts that every address leaves via its device and answers a ping (up to three tries:
    /// a fresh neighbour or bridge address may need a moment).
    pub fn assert_reached(&self, want: &[(&str, &str)]) {
        let mut left: Vec<(&str, &str)> = want.to_vec();
        for attempt in 0..3 {
            let probes = self.probe(&left.iter().map(|(a, _)| *a).collect::<Vec<_>>(), 2);
            for (p, (_, dev)) in probes.iter().zip(&left) {
                assert_eq!(&p.dev, dev, "ip route get {}: {p}\n{}", p.addr, self.logs());
            }
            let missed: Vec<usize> = (0..left.len()).filter(|&i| !probes[i].answered).collect();
            if missed.is_empty() {
                return;
            }
            if attempt == 2 {
                let why: Vec<String> = missed.iter().map(|&i| probes[i].to_string()).collect();
                panic!("no answer from the laptop:\n{}\n{}", why.join("\n"), self.logs());
            }
            left = missed.iter().map(|&i| left[i]).collect();
        }
    }

    /// Asserts that no address answers; prints and returns what was seen (for the report).
    pub fn assert_cut_off(&self, label: &str, addrs: &[&str]) -> Vec<Probe> {
        let probes = self.probe(addrs, 1);
        for p in &probes {
            eprintln!("OBSERVED [{label}] without vpnfix: {p}");
            assert!(!p.answered, "[{label}] {} answers although it should not: {p}\n{}", p.addr, self.logs());
        }
        probes
    }
}
