//! What the plugin (inside OpenVPN) and its helper (`vpnfix plugin-helper`, root) say to each
//! other over their socket: length-prefixed frames, each a tag and lists of strings. Plain and
//! bounded, so a short read, a frame too large or a string that is not UTF-8 is an error naming
//! what was wrong, never a panic or an allocation of what a length claims.

use std::io::{Read, Write};

/// The largest frame either side accepts: an OpenVPN environment with a certificate chain is a
/// few KiB; a hostile push cannot make OpenVPN pass more than it holds in memory.
pub const MAX_FRAME: usize = 4 << 20;

/// A hook OpenVPN calls the plugin for (the plugin API's event numbers, which the wire carries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `OPENVPN_PLUGIN_UP` (0): the tun device is up, OpenVPN's routes not yet added.
    Up,
    /// `OPENVPN_PLUGIN_DOWN` (1): the tun device is closed (or about to be, `down-pre`).
    Down,
    /// `OPENVPN_PLUGIN_ROUTE_UP` (2): OpenVPN's routes are in.
    RouteUp,
    /// `OPENVPN_PLUGIN_ROUTE_PREDOWN` (12): before OpenVPN deletes its routes.
    RoutePreDown,
}

impl Hook {
    /// The plugin API's number for the hook.
    pub const fn number(self) -> i32 {
        match self {
            Hook::Up => 0,
            Hook::Down => 1,
            Hook::RouteUp => 2,
            Hook::RoutePreDown => 12,
        }
    }

    /// The hook for a plugin API event number; `None` for events vpnfix does not register.
    pub fn from_number(n: i32) -> Option<Hook> {
        [Hook::Up, Hook::Down, Hook::RouteUp, Hook::RoutePreDown].into_iter().find(|h| h.number() == n)
    }

    /// The script type a script would see for it (`route-up` …), which vpnfix's hook logic reads.
    pub const fn script_type(self) -> &'static str {
        match self {
            Hook::Up => "up",
            Hook::Down => "down",
            Hook::RouteUp => "route-up",
            Hook::RoutePreDown => "route-pre-down",
        }
    }
}

/// A frame from the plugin to its helper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The first frame: the plugin is loaded, the helper should get ready. (Its settings are
    /// in its environment, made at open: see [`super::client`].)
    Open,
    /// A hook: its arguments (OpenVPN's `argv` without the library's path) and environment.
    Event {
        /// Which hook.
        hook: Hook,
        /// `tun0 1500 0 10.8.0.6 10.8.0.5 init` for up and down; none for route-up.
        argv: Vec<String>,
        /// `KEY=value` strings.
        env: Vec<String>,
    },
}

/// How serious a line the helper logged is: OpenVPN's log gets it with the matching flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// An error.
    Error,
    /// A warning.
    Warn,
    /// Everything else.
    Note,
}

/// The helper's answer to a request: whether the hook failed in a way OpenVPN must hear (a
/// strict route-up; the same rule as a script's exit status), and the lines it logged.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Answer {
    /// `true`: the plugin returns `OPENVPN_PLUGIN_FUNC_ERROR`.
    pub failed: bool,
    /// What the helper logged while it worked, for OpenVPN's log.
    pub lines: Vec<(Level, String)>,
}

/// A frame that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The other side closed the socket.
    #[error("the other side closed the connection")]
    Closed,
    /// Reading or writing failed.
    #[error("socket error")]
    Io(#[from] std::io::Error),
    /// A frame broke the format.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

const OPEN: u8 = 1;
const EVENT: u8 = 2;
const ANSWER: u8 = 3;

impl Request {
    /// The frame's bytes, without the length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Request::Open => out.push(OPEN),
            Request::Event { hook, argv, env } => {
                out.push(EVENT);
                out.extend_from_slice(&hook.number().to_le_bytes());
                put_list(&mut out, argv);
                put_list(&mut out, env);
            }
        }
        out
    }

    /// Reads a request from a frame's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        let mut r = Reader(bytes);
        let req = match r.byte()? {
            OPEN => Request::Open,
            EVENT => {
                let n = i32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
                let hook = Hook::from_number(n).ok_or(WireError::Malformed("unknown hook"))?;
                Request::Event { hook, argv: r.list()?, env: r.list()? }
            }
            _ => return Err(WireError::Malformed("not a request")),
        };
        r.end()?;
        Ok(req)
    }
}

impl Answer {
    /// The frame's bytes, without the length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ANSWER, u8::from(self.failed)];
        out.extend_from_slice(&(self.lines.len() as u32).to_le_bytes());
        for (level, text) in &self.lines {
            out.push(*level as u8);
            put_str(&mut out, text);
        }
        out
    }

    /// Reads an answer from a frame's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Answer, WireError> {
        let mut r = Reader(bytes);
        if r.byte()? != ANSWER {
            return Err(WireError::Malformed("not an answer"));
        }
        let failed = match r.byte()? {
            0 => false,
            1 => true,
            _ => return Err(WireError::Malformed("bad status")),
        };
        let n = r.count(5)?;
        let lines = (0..n)
            .map(|_| {
                let level = match r.byte()? {
                    0 => Level::Error,
                    1 => Level::Warn,
                    2 => Level::Note,
                    _ => return Err(WireError::Malformed("bad level")),
                };
                Ok((level, r.string()?))
            })
            .collect::<Result<_, _>>()?;
        r.end()?;
        Ok(Answer { failed, lines })
    }
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for s in items {
        put_str(out, s);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The unread rest of a frame.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.0.len() {
            return Err(WireError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }

    /// A count of items, each at least `min` bytes long: a count beyond what the rest of the
    /// frame can hold is a lie, refused before anything is allocated for it.
    fn count(&mut self, min: usize) -> Result<usize, WireError> {
        let n = self.u32()?;
        match n > self.0.len() / min {
            true => Err(WireError::Malformed("list longer than the frame")),
            false => Ok(n),
        }
    }

    fn string(&mut self) -> Result<String, WireError> {
        let len = self.u32()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Malformed("string not UTF-8"))
    }

    fn list(&mut self) -> Result<Vec<String>, WireError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.string()).collect()
    }

    fn end(&self) -> Result<(), WireError> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(WireError::Malformed("trailing bytes")),
        }
    }
}

/// Writes one frame: its length (u32, little-endian), then its bytes, in one write.
pub fn send(w: &mut impl Write, frame: &[u8]) -> Result<(), WireError> {
    if frame.len() > MAX_FRAME {
        return Err(WireError::Malformed("frame too large to send"));
    }
    let mut buf = Vec::with_capacity(frame.len() + 4);
    buf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    buf.extend_from_slice(frame);
    w.write_all(&buf)?;
    Ok(())
}

/// Reads one frame; [`WireError::Closed`] when the other side closed before one began.
pub fn receive(r: &mut impl Read) -> Result<Vec<u8>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        other => other?,
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::Malformed("frame larger than 4 MiB"));
    }
    let mut frame = vec![0; len];
    r.read_exact(&mut frame)?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let reqs = [
            Request::Open,
            Request::Event { hook: Hook::RoutePreDown, argv: strings(&["tun0", "1500", "0"]), env: vec![] },
            Request::Event { hook: Hook::RouteUp, argv: vec![], env: strings(&["dev=tun0", "ü=é"]) },
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        let a = Answer { failed: true, lines: vec![(Level::Warn, "w".into()), (Level::Note, String::new())] };
        assert_eq!(Answer::decode(&a.encode()).unwrap(), a);
        assert_eq!(Answer::decode(&Answer::default().encode()).unwrap(), Answer::default());
        for h in [Hook::Up, Hook::Down, Hook::RouteUp, Hook::RoutePreDown] {
            assert_eq!(Hook::from_number(h.number()), Some(h));
        }
        assert_eq!(Hook::from_number(3), None, "ipchange is not registered");
    }

    #[test]
    fn bad_frames_are_errors_that_say_why() {
        let good = Request::Event { hook: Hook::RouteUp, argv: vec![], env: strings(&["dev=tun0"]) }.encode();
        // Every truncation, and every byte flipped, is an error or another valid request: never
        // a panic.
        for n in 0..good.len() {
            assert!(Request::decode(&good[..n]).is_err(), "truncated at {n}");
            for b in [0u8, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[n] = b;
                let _ = Request::decode(&bad);
            }
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Request::decode(&trailing).unwrap_err().to_string(), "malformed frame: trailing bytes");
        // A count that claims four billion strings allocates nothing.
        let lie = [vec![EVENT, 2, 0, 0, 0], u32::MAX.to_le_bytes().to_vec()].concat();
        assert_eq!(Request::decode(&lie).unwrap_err().to_string(), "malformed frame: list longer than the frame");
        let not_utf8 = [EVENT, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0, 0, 0, 0];
        assert_eq!(Request::decode(&not_utf8).unwrap_err().to_string(), "malformed frame: string not UTF-8");
    }

    #[test]
    fn frames_are_length_prefixed_and_bounded() {
        let mut buf = Vec::new();
        send(&mut buf, b"abc").unwrap();
        send(&mut buf, b"").unwrap();
        let mut r = buf.as_slice();
        assert_eq!(receive(&mut r).unwrap(), b"abc");
        assert_eq!(receive(&mut r).unwrap(), b"");
        assert!(matches!(receive(&mut r), Err(WireError::Closed)));
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(receive(&mut huge.as_slice()), Err(WireError::Malformed(_))));
        let short = [5u8, 0, 0, 0, b'a'];
        assert!(matches!(receive(&mut short.as_slice()), Err(WireError::Io(_))));
    }
}
