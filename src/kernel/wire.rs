//! The netlink socket under [`super::Kernel`]: plain, blocking requests and dumps.
//!
//! The kernel handles every message of a datagram in turn inside `sendmsg` (`netlink_rcv_skb`)
//! and queues each answer on the sender's socket before `sendmsg` returns; a dump's next part is
//! made inside `recvmsg`. So many requests go out in one datagram and their answers are read
//! right after, with nothing to wait for: [`Wire::requests`] sends them [`Wire::batch`] at a
//! time (as many as the receive buffer holds answers for), [`Wire::dump`] one dump.
//!
//! Answers come back as [`Raw`] messages, parsed by the caller for the one type it asked for:
//! a link dump needs four attributes, not the hundreds netlink-packet-route would decode. Every
//! failure keeps its errno ([`WireError`]).

use rtnetlink::packet_core::{
    ErrorBuffer, ErrorMessage, NetlinkBuffer, NetlinkMessage, Parseable, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;

/// Room for one datagram: a dump part is at most 32 KiB (`netlink_recvmsg` caps
/// `max_recvmsg_len`), an answer to a request far less.
const DATAGRAM: usize = 64 * 1024;
/// The receive buffer asked for: past `net.core.rmem_max` where the caller may (CAP_NET_ADMIN,
/// `SO_RCVBUFFORCE`), else as much as `SO_RCVBUF` gives.
const RCVBUF: usize = 4 << 20;
/// What one answer may take of the receive buffer (its skb's truesize): a route lookup's answer
/// is built in an `NLMSG_GOODSIZE` buffer, about 4.3 KiB with its skb (`inet_rtm_getroute`);
/// an ack well under 1 KiB. The kernel drops an answer that does not fit (`netlink_overrun`:
/// ENOBUFS, the request never answered), so a datagram carries no more requests than fit.
const ANSWER: usize = 8 << 10;

/// What went wrong on the wire, with the errno.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Sending or receiving failed.
    #[error("netlink socket: {0}")]
    Io(#[source] io::Error),
    /// The kernel refused the request: its errno (positive).
    #[error("{}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    /// An answer of a kind the request does not get, or one cut short.
    #[error("unexpected netlink answer ({0})")]
    Unexpected(&'static str),
}

impl WireError {
    /// The errno, if the kernel or the socket gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            WireError::Io(e) => e.raw_os_error(),
            WireError::Kernel(n) => Some(*n),
            WireError::Unexpected(_) => None,
        }
    }
}

/// What a request (not a dump) gets back: a message, or an ack.
pub(super) enum Answer {
    Message(Raw),
    Ack,
}

/// A message as the kernel sent it: its type (`RTM_NEWROUTE` …) and its body (after the
/// netlink header), unparsed.
pub(super) struct Raw {
    pub(super) kind: u16,
    pub(super) body: Vec<u8>,
}

/// An rtnetlink socket (in the network namespace of the thread that opened it).
pub(super) struct Wire {
    socket: Socket,
    seq: Cell<u32>,
    buf: RefCell<Vec<u8>>,
    /// Requests per datagram: as many answers as the receive buffer holds.
    batch: usize,
}

impl Wire {
    /// Opens and binds the socket, with as large a receive buffer as it may have.
    pub(super) fn connect() -> io::Result<Wire> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&socket, sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = socket.set_rx_buf_sz(RCVBUF); // capped by rmem_max
        }
        // The kernel reports twice the size it accounts against (`sock_setsockopt`).
        let rcvbuf = socket.get_rx_buf_sz().unwrap_or(416 << 10);
        Ok(Wire { socket, seq: Cell::new(0), buf: RefCell::new(Vec::new()), batch: (rcvbuf / 2 / ANSWER).max(8) })
    }

    /// How many requests go out in one datagram.
    pub(super) fn batch(&self) -> usize {
        self.batch
    }

    /// Requests the kernel acknowledges (`NLM_F_ACK` in their flags) or answers with one message
    /// each; every one's answer, in order. The outer error is the socket's: then no answer is
    /// known for the requests of that datagram or later ones.
    pub(super) fn requests(
        &self,
        reqs: Vec<(RouteNetlinkMessage, u16)>,
    ) -> Result<Vec<Result<Answer, WireError>>, WireError> {
        let mut answers = Vec::with_capacity(reqs.len());
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            let mut out = Vec::new();
            let seqs: Vec<u32> = reqs.by_ref().take(self.batch).map(|(b, f)| self.push(&mut out, b, f)).collect();
            self.socket.send(&out, 0).map_err(WireError::Io)?;
            let mut got = self.collect(&seqs)?;
            answers.extend(seqs.iter().map(|s| got.remove(s).unwrap_or(Err(WireError::Unexpected("no answer")))));
        }
        Ok(answers)
    }

    /// Changes (route adds, deletes) the kernel answers only when they fail: `NLM_F_ACK` rides
    /// on the last request of each datagram alone, and since the kernel handles a datagram
    /// within `sendmsg`, that ack arriving says every request before it is done; a request
    /// with no error message succeeded (`netlink_rcv_skb` acks errors whatever the flags). So
    /// 10,000 adds cost a few dozen reads, not 10,000. Each one's outcome, in order; the outer
    /// error is the socket's.
    pub(super) fn changes(
        &self,
        reqs: Vec<(RouteNetlinkMessage, u16)>,
    ) -> Result<Vec<Result<(), WireError>>, WireError> {
        let mut outcomes = Vec::with_capacity(reqs.len());
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            let (mut out, mut seqs) = (Vec::new(), Vec::new());
            for n in 0..self.batch {
                let Some((body, flags)) = reqs.next() else { break };
                let last = n + 1 == self.batch || reqs.peek().is_none();
                let flags = if last { flags | NLM_F_ACK } else { flags & !NLM_F_ACK };
                seqs.push(self.push(&mut out, body, flags));
            }
            self.socket.send(&out, 0).map_err(WireError::Io)?;
            let last = *seqs.last().expect("at least one request");
            let mut failed = self.collect_until(last)?;
            outcomes.extend(seqs.iter().map(|s| match failed.remove(s) {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            }));
        }
        Ok(outcomes)
    }

    /// Reads datagrams until the answer to `last` arrives; every answer read on the way, by
    /// sequence number.
    fn collect_until(&self, last: u32) -> Result<HashMap<u32, Result<Answer, WireError>>, WireError> {
        let mut got = HashMap::new();
        while !got.contains_key(&last) {
            let buf = self.receive()?;
            for (s, kind, msg) in messages(&buf) {
                got.insert(s, answer(msg, kind));
            }
        }
        Ok(got)
    }

    /// One request with exactly one answer (a route lookup, one link by name).
    pub(super) fn one(&self, body: RouteNetlinkMessage) -> Result<Raw, WireError> {
        match self.requests(vec![(body, NLM_F_REQUEST)])?.pop() {
            Some(Ok(Answer::Message(m))) => Ok(m),
            Some(Ok(Answer::Ack)) | None => Err(WireError::Unexpected("an ack where a message was due")),
            Some(Err(e)) => Err(e),
        }
    }

    /// A dump: every message up to `NLMSG_DONE`.
    pub(super) fn dump(&self, body: RouteNetlinkMessage) -> Result<Vec<Raw>, WireError> {
        let mut out = Vec::new();
        let seq = self.push(&mut out, body, NLM_F_REQUEST | NLM_F_DUMP);
        self.socket.send(&out, 0).map_err(WireError::Io)?;
        let mut msgs = Vec::new();
        loop {
            let buf = self.receive()?;
            for (s, kind, msg) in messages(&buf) {
                match (s == seq, kind) {
                    (false, _) => {}
                    (true, NLMSG_DONE) => return Ok(msgs),
                    (true, NLMSG_ERROR) => return Err(answer(msg, kind).err().unwrap_or(WireError::Unexpected("ack"))),
                    (true, _) => msgs.push(Raw { kind, body: msg[HEADER..].to_vec() }),
                }
            }
        }
    }

    /// Appends a request to `out` (aligned: `netlink_rcv_skb` finds the next message at the
    /// aligned length); its sequence number.
    fn push(&self, out: &mut Vec<u8>, body: RouteNetlinkMessage, flags: u16) -> u32 {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut msg = NetlinkMessage::from(body);
        msg.header.flags = flags;
        msg.header.sequence_number = seq;
        msg.finalize();
        let start = out.len();
        out.resize(start + msg.buffer_len().next_multiple_of(4), 0);
        msg.serialize(&mut out[start..]);
        seq
    }

    /// Reads datagrams until every one of `seqs` is answered.
    fn collect(&self, seqs: &[u32]) -> Result<HashMap<u32, Result<Answer, WireError>>, WireError> {
        let mut got = HashMap::with_capacity(seqs.len());
        let wanted: std::collections::HashSet<u32> = seqs.iter().copied().collect();
        while got.len() < wanted.len() {
            let buf = self.receive()?;
            for (s, kind, msg) in messages(&buf) {
                if wanted.contains(&s) {
                    got.insert(s, answer(msg, kind));
                }
            }
        }
        Ok(got)
    }

    /// One datagram.
    fn receive(&self) -> Result<std::cell::Ref<'_, Vec<u8>>, WireError> {
        {
            let mut buf = self.buf.borrow_mut();
            buf.clear();
            buf.reserve(DATAGRAM);
            self.socket.recv(&mut *buf, 0).map_err(WireError::Io)?;
        }
        Ok(self.buf.borrow())
    }
}

/// The messages of a datagram: sequence number, type and the whole message (header included).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u32, u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let b = NetlinkBuffer::new_checked(&buf[at..]).ok()?;
        let (seq, kind, len) = (b.sequence_number(), b.message_type(), b.length() as usize);
        let msg = &buf[at..at + len];
        at += len.next_multiple_of(4);
        Some((seq, kind, msg))
    })
}

/// The netlink header's length: a message's body starts there.
const HEADER: usize = 16;

/// The answer to a request: an ack, a message, or the kernel's errno.
fn answer(msg: &[u8], kind: u16) -> Result<Answer, WireError> {
    if kind != NLMSG_ERROR {
        return Ok(Answer::Message(Raw { kind, body: msg[HEADER..].to_vec() }));
    }
    let body = &msg[HEADER..];
    match ErrorBuffer::new_checked(&body).and_then(|b| ErrorMessage::parse(&b)) {
        Ok(e) => match e.code {
            None => Ok(Answer::Ack),
            Some(code) => Err(WireError::Kernel(code.get().abs())),
        },
        Err(_) => Err(WireError::Unexpected("an error message cut short")),
    }
}

/// `RTMGRP_LINK`, `RTMGRP_NEIGH`, `RTMGRP_IPV4_ROUTE`, `RTMGRP_IPV6_ROUTE` (`rtnetlink.h`).
const GROUPS: u32 = 0x1 | 0x4 | 0x40 | 0x400;

/// The kernel's notifications of link, neighbour and route changes, for the watcher: a socket
/// in the rtnetlink multicast groups, read with a time limit (no polling: `recv` sleeps).
pub(super) struct Events {
    socket: Socket,
    buf: Vec<u8>,
}

impl Events {
    /// Joins the groups in the calling thread's network namespace.
    pub(super) fn open() -> io::Result<Events> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, GROUPS))?;
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&socket, sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = socket.set_rx_buf_sz(RCVBUF);
        }
        Ok(Events { socket, buf: Vec::new() })
    }

    /// The messages of the next datagram, waiting at most `limit` (`None`: until one comes);
    /// none when the time ran out. `Ok(None)` when notifications were lost (ENOBUFS: the
    /// receive buffer overflowed): the caller must read the whole state again.
    pub(super) fn next(&mut self, limit: Option<std::time::Duration>) -> io::Result<Option<Vec<Raw>>> {
        use nix::sys::socket::{setsockopt, sockopt};
        use nix::sys::time::TimeVal;
        let tv =
            limit.map_or(TimeVal::new(0, 0), |d| TimeVal::new(d.as_secs() as i64, d.subsec_micros().max(1).into()));
        setsockopt(&self.socket, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
        self.buf.clear();
        self.buf.reserve(DATAGRAM);
        match self.socket.recv(&mut self.buf, 0) {
            Ok(_) => {
                Ok(Some(messages(&self.buf).map(|(_, kind, msg)| Raw { kind, body: msg[HEADER..].to_vec() }).collect()))
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(Some(Vec::new())),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
