//! Podman's own API (libpod), asked for the one thing its Docker-compatible answer leaves out:
//! each network's bridge (`network_interface`; Podman 4.x answers `"Options": {}` where moby
//! names it). An answer at all also tells Podman from Docker, which has no such path.
//!
//! It is asked only when the compatible answer looks like Podman's ([`looks_like_podman`]).
//! One plain HTTP/1.0 GET on the engine's socket, read to the end: bollard has no libpod calls,
//! and HTTP/1.0 keeps the answer free of chunked encoding (Go's server closes the connection
//! instead). Any failure means "not Podman, or not telling": the compatible answer still stands.

use bollard::models::NetworkInspect;
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Podman's libpod path for the network list. libpod's routes exist only under a version
/// prefix; Podman accepts any version from its oldest supported (4.0.0 for Podman 4 and 5).
const PATH: &str = "/v4.0.0/libpod/networks/json";

/// The most vpnfix reads of an answer (a host with hundreds of networks stays far below).
const MAX_ANSWER: u64 = 16 << 20;

/// A network as libpod lists it; only what vpnfix uses.
#[derive(Debug, serde::Deserialize)]
pub struct LibpodNetwork {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// The Linux bridge (netavark: `podman0`, `podman1` …; CNI: `cni-podman0` …).
    #[serde(default)]
    pub network_interface: Option<String>,
}

/// Podman's networks, or `None` when the engine at `host` is not Podman (or did not say).
pub async fn networks(host: &str) -> Option<Vec<LibpodNetwork>> {
    let body = get(host, PATH).await?;
    serde_json::from_slice(&body).ok()
}

/// Whether a compatible network list looks like Podman's: Podman describes every network's
/// address management as `"IPAM": {"Options": {"driver": "host-local"}}` (or `dhcp`), and
/// always lists its default network; moby leaves the IPAM options empty.
pub fn looks_like_podman(networks: &[NetworkInspect]) -> bool {
    let ipam_driver = |n: &NetworkInspect| n.ipam.as_ref()?.options.as_ref()?.get("driver").cloned();
    networks.iter().any(|n| ipam_driver(n).is_some())
}

/// Sets each network's bridge name (moby's option key, so bundles carry it the same way) from
/// Podman's own list, matched by id, or by name (Podman before 5.4 put the name in the id).
pub fn name_bridges(networks: &mut [NetworkInspect], libpod: &[LibpodNetwork]) {
    for n in networks {
        let same = |l: &&LibpodNetwork| n.id.as_deref() == Some(l.id.as_str()) || n.name.as_deref() == Some(&l.name);
        let Some(dev) = libpod.iter().find(same).and_then(|l| l.network_interface.clone()) else { continue };
        let options = n.options.get_or_insert_with(HashMap::new);
        options.entry(super::BRIDGE_NAME.to_string()).or_insert(dev);
    }
}

/// The body of a 200 answer to `GET path` on `host` (`unix://` or `tcp://`/`http://`).
async fn get(host: &str, path: &str) -> Option<Vec<u8>> {
    match answer(host, path).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// The status and body of the answer to `GET path` on `host` (`unix://` or `tcp://`/`http://`).
async fn answer(host: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    if let Some(sock) = host.strip_prefix("unix://") {
        exchange(tokio::net::UnixStream::connect(sock).await?, path).await
    } else {
        let addr = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://"));
        let addr = addr
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not unix://, tcp:// or http://"))?;
        exchange(tokio::net::TcpStream::connect(addr.trim_end_matches('/')).await?, path).await
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut answer).await?;
    split_answer(&answer)
        .map(|(status, body)| (status, body.to_vec()))
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}

/// The same, blocking, every read and write bounded by `limit`: for a caller with no runtime.
pub(super) fn answer_blocking(host: &str, path: &str, limit: std::time::Duration) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut answer = Vec::new();
    if let Some(sock) = host.strip_prefix("unix://") {
        let mut s = std::os::unix::net::UnixStream::connect(sock)?;
        s.set_read_timeout(Some(limit))?;
        s.set_write_timeout(Some(limit))?;
        s.write_all(request.as_bytes())?;
        s.take(MAX_ANSWER).read_to_end(&mut answer)?;
    } else {
        let addr = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://"));
        let addr = addr
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not unix://, tcp:// or http://"))?;
        let mut s = std::net::TcpStream::connect(addr.trim_end_matches('/'))?;
        s.set_read_timeout(Some(limit))?;
        s.set_write_timeout(Some(limit))?;
        s.write_all(request.as_bytes())?;
        s.take(MAX_ANSWER).read_to_end(&mut answer)?;
    }
    split_answer(&answer)
        .map(|(status, body)| (status, body.to_vec()))
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}

/// An HTTP answer's status and body.
fn split_answer(answer: &[u8]) -> Option<(u16, &[u8])> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = answer[..end].split(|b| *b == b' ').nth(1)?;
    let status = std::str::from_utf8(status).ok()?.parse().ok()?;
    Some((status, &answer[end + 4..]))
}

/// The body of an HTTP answer whose status is 200.
#[cfg(test)]
fn body_of_ok(answer: &[u8]) -> Option<&[u8]> {
    split_answer(answer).filter(|(s, _)| *s == 200).map(|(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_200_answer_has_a_body() {
        assert_eq!(body_of_ok(b"HTTP/1.0 200 OK\r\nContent-Type: x\r\n\r\n[]"), Some(&b"[]"[..]));
        assert_eq!(body_of_ok(b"HTTP/1.0 404 Not Found\r\n\r\n{\"message\":\"page not found\"}"), None);
        assert_eq!(body_of_ok(b"HTTP/1.0 200 OK\r\n"), None, "cut off before the body");
        assert_eq!(body_of_ok(b""), None);
    }

    #[test]
    fn podmans_compatible_answer_is_told_from_dockers() {
        let list = |json: &str| serde_json::from_str::<Vec<NetworkInspect>>(json).unwrap();
        let podman = r#"[{"Name":"bridge","IPAM":{"Driver":"default","Options":{"driver":"host-local"},"Config":[]}}]"#;
        let docker = r#"[{"Name":"bridge","IPAM":{"Driver":"default","Options":null,"Config":[]}},{"Name":"host"}]"#;
        assert!(looks_like_podman(&list(podman)));
        assert!(!looks_like_podman(&list(docker)));
        assert!(!looks_like_podman(&[]));
    }

    #[test]
    fn podman_names_the_bridges_its_compatible_answer_leaves_out() {
        let mut compat: Vec<NetworkInspect> = serde_json::from_str(
            r#"[{"Name":"podman","Id":"2f25","Options":{}},{"Name":"pdtnet","Id":"pdtnet"},
                {"Name":"named","Id":"77","Options":{"com.docker.network.bridge.name":"mybr"}}]"#,
        )
        .unwrap();
        let libpod: Vec<LibpodNetwork> = serde_json::from_str(
            r#"[{"name":"podman","id":"2f25","network_interface":"podman0"},
                {"name":"pdtnet","id":"9a9a","network_interface":"cni-podman1"},
                {"name":"named","id":"77","network_interface":"other"}]"#,
        )
        .unwrap();
        name_bridges(&mut compat, &libpod);
        let bridge = |i: usize| compat[i].options.as_ref().and_then(|o| o.get(super::super::BRIDGE_NAME)).cloned();
        assert_eq!(bridge(0).as_deref(), Some("podman0"));
        assert_eq!(bridge(1).as_deref(), Some("cni-podman1"), "matched by name where the id is the name");
        assert_eq!(bridge(2).as_deref(), Some("mybr"), "the engine's own option stays");
    }
}
