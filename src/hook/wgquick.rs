//! wg-quick's hooks, for a configuration with `Table = off` (wg-quick then routes nothing from
//! AllowedIPs, and vpnfix routes all of it, but where the rule decides otherwise):
//!
//! ```text
//! Table = off
//! PostUp = /usr/local/bin/vpnfix wg-quick up %i
//! PreDown = /usr/local/bin/vpnfix wg-quick down %i
//! ```
//!
//! The pushes are the interface's AllowedIPs, read from the interface itself: from a userspace
//! implementation's UAPI socket (`/var/run/wireguard/IFACE.sock`, wireguard-go and boringtun:
//! `get=1` answers `allowed_ip=PREFIX` lines), or, for the kernel module, from what `wg show
//! IFACE allowed-ips` prints, piped in (`wg show %i allowed-ips | vpnfix wg-quick up %i -`).

use super::{Event, HookInput};
use crate::net::{Push, Skipped, Tunnel, TunnelKind};
use ipnet::IpNet;
use std::io::{Read, Write};

/// Why wg-quick's hook could not be understood or its interface read.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    /// Not `up IFACE` or `down IFACE`.
    #[error("expected `wg-quick up IFACE` or `wg-quick down IFACE` (as PostUp and PreDown run it), got {0:?}")]
    Usage(String),
    /// The interface name is not one the kernel would accept.
    #[error("{0:?} is not a valid interface name")]
    BadDevice(String),
    /// Neither a UAPI socket nor piped-in `wg show` output tells the AllowedIPs.
    #[error(
        "cannot read {iface}'s AllowedIPs: no userspace socket {path} (the kernel module's are not read over netlink yet: use `PostUp = wg show %i allowed-ips | vpnfix wg-quick up %i -`)"
    )]
    NoSource {
        /// The interface.
        iface: String,
        /// The socket looked for.
        path: String,
    },
    /// Talking to the UAPI socket failed.
    #[error("cannot read {iface}'s AllowedIPs from {path}")]
    Uapi {
        /// The interface.
        iface: String,
        /// The socket.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The AllowedIPs in a UAPI `get=1` answer (`allowed_ip=172.20.0.0/16` lines; `errno=0` ends it).
pub fn parse_uapi(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("allowed_ip=")).map(|v| v.trim().to_string()).collect()
}

/// The AllowedIPs in `wg show IFACE allowed-ips` output: one peer a line, its public key then its
/// prefixes separated by blanks, `(none)` for a peer without.
pub fn parse_wg_show(text: &str) -> Vec<String> {
    text.lines().flat_map(|l| l.split_whitespace().skip(1)).filter(|t| *t != "(none)").map(str::to_string).collect()
}

/// The directories wireguard-go (and wg) keep UAPI sockets in.
const SOCKET_DIRS: [&str; 2] = ["/var/run/wireguard", "/run/wireguard"];

/// The most vpnfix reads of a UAPI answer.
const MAX_ANSWER: u64 = 4 << 20;

/// Asks a userspace implementation's UAPI socket for `iface`'s AllowedIPs.
pub fn uapi_allowed_ips(iface: &str) -> Result<Vec<String>, WgError> {
    let path =
        SOCKET_DIRS.iter().map(|d| format!("{d}/{iface}.sock")).find(|p| std::path::Path::new(p).exists()).ok_or_else(
            || WgError::NoSource { iface: iface.into(), path: format!("{}/{iface}.sock", SOCKET_DIRS[0]) },
        )?;
    let err = |source| WgError::Uapi { iface: iface.into(), path: path.clone(), source };
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(err)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2))).map_err(err)?;
    s.write_all(b"get=1\n\n").map_err(err)?;
    // The answer ends with an empty line after `errno=N`; the socket stays open.
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).map_err(err)?;
        answer.extend_from_slice(&buf[..n]);
        if n == 0 || answer.ends_with(b"\n\n") || answer.len() as u64 > MAX_ANSWER {
            break;
        }
    }
    Ok(parse_uapi(&String::from_utf8_lossy(&answer)))
}

/// wg-quick's hook input: `up`/`down` and the interface, with its AllowedIPs (`None` for `down`,
/// which needs only the record). A default route is reported, never a push: wg-quick routes it
/// with policy rules of its own (`Table = auto`), and vpnfix routes none.
pub fn input(args: &[String], allowed: Option<Vec<String>>) -> Result<HookInput, WgError> {
    let (action, iface) = match args {
        [a, i, ..] if a == "up" || a == "down" => (a.as_str(), i.as_str()),
        _ => return Err(WgError::Usage(args.join(" "))),
    };
    if !crate::net::valid_ifname(iface) {
        return Err(WgError::BadDevice(iface.into()));
    }
    let mut pushes = Vec::new();
    let mut skipped = Vec::new();
    for (i, a) in allowed.unwrap_or_default().iter().enumerate() {
        let origin = format!("AllowedIPs {}", i + 1);
        match a.parse::<IpNet>() {
            Ok(n) if n.prefix_len() == 0 => skipped.push(Skipped::new(
                format!("{n} ({origin})"),
                "a default route: wg-quick routes it with policy rules of its own (Table = auto); with Table = off vpnfix routes none",
            )),
            Ok(n) if n.trunc() != n => {
                skipped.push(Skipped::new(format!("{a} ({origin})"), "has host bits set; route skipped"))
            }
            Ok(n) if pushes.iter().any(|p: &Push| p.dst == n) => {}
            Ok(n) => pushes.push(Push { dst: n, gateway: None, metric: None, origin }),
            Err(_) => skipped.push(Skipped::new(format!("{a:?} ({origin})"), "not a prefix; route skipped")),
        }
    }
    Ok(HookInput {
        script_type: Some(format!("wg-quick {action}")),
        event: Some(if action == "up" { Event::Connect } else { Event::Disconnect }),
        tunnel: Tunnel { dev: iface.into(), kind: TunnelKind::Tun, unrouted: true, ..Tunnel::default() },
        pushes,
        skipped,
        redirect_gateway: None,
        connection: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn both_sources_read_the_same_prefixes() {
        let uapi = "private_key=aa\nlisten_port=51820\npublic_key=bb\nendpoint=198.18.2.1:51820\n\
                    allowed_ip=172.20.0.0/16\nallowed_ip=fd00:ac14::/64\nprotocol_version=1\nerrno=0\n\n";
        assert_eq!(parse_uapi(uapi), ["172.20.0.0/16", "fd00:ac14::/64"]);
        let show = "bbKEY=\t172.20.0.0/16 fd00:ac14::/64\nccKEY=\t(none)\n";
        assert_eq!(parse_wg_show(show), ["172.20.0.0/16", "fd00:ac14::/64"]);
    }

    #[test]
    fn the_captured_post_up_reads_as_three_pushes() {
        // wireguard-tools 1.0.20210914's PostUp (tests/fixtures/wg-quick-1.0.20210914): the
        // `wg show %i allowed-ips` section of the capture.
        let text = include_str!("../../tests/fixtures/wg-quick-1.0.20210914/PostUp.txt");
        let section = text.split("## wg show ocwwg0 allowed-ips\n").nth(1).unwrap().split("\n## ").next().unwrap();
        let i = input(&s(&["up", "ocwwg0"]), Some(parse_wg_show(section))).unwrap();
        let dsts: Vec<String> = i.pushes.iter().map(|p| p.dst.to_string()).collect();
        assert_eq!(dsts, ["10.9.0.1/32", "172.20.0.0/16", "fd00:ac14::/64"]);
        assert!(i.skipped.is_empty());
    }

    #[test]
    fn the_input_routes_everything_but_a_default() {
        let allowed =
            s(&["172.20.0.0/16", "0.0.0.0/0", "fd00:ac14::/64", "::/0", "10.0.0.1/8", "junk", "172.20.0.0/16"]);
        let i = input(&s(&["up", "wg0"]), Some(allowed)).unwrap();
        assert_eq!(i.event, Some(Event::Connect));
        assert!(i.tunnel.unrouted && i.tunnel.dev == "wg0");
        let dsts: Vec<String> = i.pushes.iter().map(|p| p.dst.to_string()).collect();
        assert_eq!(dsts, ["172.20.0.0/16", "fd00:ac14::/64"]);
        let why: Vec<String> = i.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(why.len(), 4, "{why:#?}");
        assert!(why[0].starts_with("0.0.0.0/0 (AllowedIPs 2): a default route"), "{why:#?}");
        assert!(why[2].contains("host bits") && why[3].contains("not a prefix"), "{why:#?}");
        assert_eq!(input(&s(&["down", "wg0"]), None).unwrap().event, Some(Event::Disconnect));
        assert!(matches!(input(&s(&["sideways", "wg0"]), None), Err(WgError::Usage(_))));
        assert!(matches!(input(&s(&["up", "a b"]), None), Err(WgError::BadDevice(_))));
    }
}
