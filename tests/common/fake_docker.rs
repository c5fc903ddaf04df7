//! Fake Docker sockets, for what a real engine will not do on demand: accept and never
//! answer, answer HTTP that is not Docker's API, or speak another API version than this
//! machine's dockerd 20.10. Each is served by a background thread, stopped and joined on drop.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a fake Docker socket does with each connection.
#[derive(Clone)]
pub enum Fake {
    /// Accepts and never answers (the streams stay open).
    Hang,
    /// Reads the request, answers a well-formed HTTP response that is not Docker's JSON.
    Garbage,
    /// Answers as a Docker engine newer than this machine's (API 1.52, which refuses requests
    /// of API 1.43 and older) would, and records each request line.
    Newer(Arc<Mutex<Vec<String>>>),
}

/// A fake Docker socket served by a background thread; stopped and joined on drop.
pub struct FakeDocker {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDocker {
    /// Binds `path` here, in the test thread, and serves it in the background.
    pub fn serve(path: PathBuf, how: Fake) -> FakeDocker {
        let listener = UnixListener::bind(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new(); // hung connections stay open until we stop
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = conn else { continue };
                match &how {
                    Fake::Hang => held.push(s),
                    Fake::Garbage => answer(&mut s, "200 OK", "hello"),
                    Fake::Newer(seen) => answer_as_newer_engine(&mut s, seen),
                }
            }
        });
        FakeDocker { path, stop, thread: Some(thread) }
    }
}

/// Reads one request head and returns its first line.
fn request_line(s: &mut UnixStream) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string()
}

/// Reads one request, answers `status` with `body` and closes.
fn answer(s: &mut UnixStream, status: &str, body: &str) {
    request_line(s);
    reply(s, status, body);
}

fn reply(s: &mut UnixStream, status: &str, body: &str) {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n");
    let _ = s.write_all(format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
}

/// Network `office_default` (compose project `office`, 172.20.0.0/16 on br-test) in an API 1.52
/// network list.
const NEWER_NETWORKS: &str = r#"[{"Name":"office_default","Id":"0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0","Created":"2026-11-20T09:00:00Z","Scope":"local","Driver":"bridge","EnableIPv4":true,"EnableIPv6":false,"IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"172.20.0.0/16","Gateway":"172.20.0.1"}]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,"Options":{"com.docker.network.bridge.name":"br-test"},"Labels":{"com.docker.compose.network":"default","com.docker.compose.project":"office"}}]"#;

/// Container `office-web-1` at 172.20.9.9 on that network, in an API 1.52 container list.
const NEWER_CONTAINERS: &str = r#"[{"Id":"c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00","Names":["/office-web-1"],"Image":"nginx","State":"running","Status":"Up 2 hours","NetworkSettings":{"Networks":{"office_default":{"NetworkID":"0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0","EndpointID":"e1e1","Gateway":"172.20.0.1","IPAddress":"172.20.9.9","IPPrefixLen":16,"MacAddress":"02:42:ac:14:09:09","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0}}}}]"#;

/// What moby's version middleware does: a `/vX.Y` older than 1.44 or newer than 1.52 is
/// refused with 400; a path without a version is served in the engine's own (1.52).
fn answer_as_newer_engine(s: &mut UnixStream, seen: &Mutex<Vec<String>>) {
    let line = request_line(s);
    seen.lock().unwrap().push(line.clone());
    let path = line.split(' ').nth(1).unwrap_or_default();
    let (version, rest) = match path.strip_prefix("/v").and_then(|p| p.split_once('/')) {
        Some((v, rest)) => (Some(v.to_string()), format!("/{rest}")),
        None => (None, path.to_string()),
    };
    let spoken =
        |v: &str| v.strip_prefix("1.").and_then(|m| m.parse::<u32>().ok()).is_some_and(|m| (44..=52).contains(&m));
    if let Some(v) = version.filter(|v| !spoken(v)) {
        let msg = format!(r#"{{"message":"client version {v} is not supported (1.44 to 1.52)"}}"#);
        return reply(s, "400 Bad Request", &msg);
    }
    match rest.split('?').next().unwrap_or_default() {
        "/networks" => reply(s, "200 OK", NEWER_NETWORKS),
        "/containers/json" => reply(s, "200 OK", NEWER_CONTAINERS),
        "/version" => reply(s, "200 OK", r#"{"Version":"29.0.0","ApiVersion":"1.52","MinAPIVersion":"1.44"}"#),
        _ => reply(s, "404 Not Found", r#"{"message":"page not found"}"#),
    }
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
