//! The netlink socket under [`super::Kernel`]: requests made together go out in one datagram,
//! and their answers are read at once.
//!
//! The kernel handles every message of a datagram in turn inside `sendmsg` (`netlink_rcv_skb`)
//! and queues each answer on the sender's socket before `sendmsg` returns; a dump's next part
//! is made inside `recvmsg`. So nothing here ever waits for the kernel: a request is queued,
//! its future yields once so that the requests of the futures polled alongside it (`join_all`,
//! `buffered`) are queued too, and the first of them to resume sends the whole queue as one
//! datagram and reads every answer. One `sendmsg` per window instead of one per request, and
//! no task, channel or wake-up per request.
//!
//! Answers come back as [`Raw`] messages, parsed by the caller for the one type it asked for:
//! a link dump needs four attributes, not the hundreds netlink-packet-route would decode.

use rtnetlink::packet_core::{
    ErrorBuffer, ErrorMessage, NetlinkBuffer, NetlinkMessage, Parseable, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

/// Room for one datagram: a dump part is at most 32 KiB (`netlink_recvmsg` caps
/// `max_recvmsg_len`), an answer to a request far less.
const DATAGRAM: usize = 64 * 1024;
/// A larger receive buffer where `net.core.rmem_max` allows (best effort; see `IN_FLIGHT`).
const RCVBUF: usize = 1 << 20;

/// An rtnetlink socket with its queue of requests not yet sent and answers not yet taken.
pub(super) struct Wire {
    socket: Socket,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    seq: u32,
    /// Requests queued and not yet sent, as one datagram.
    out: Vec<u8>,
    /// Their sequence numbers.
    unsent: Vec<u32>,
    /// Requests sent and not yet answered.
    waiting: HashSet<u32>,
    /// Answers not yet taken, by sequence number.
    answers: HashMap<u32, Result<Answer, rtnetlink::Error>>,
    buf: Vec<u8>,
}

/// What a request (not a dump) gets back: a message, or an ack.
enum Answer {
    Message(Raw),
    Ack,
}

/// A message as the kernel sent it: its type (`RTM_NEWROUTE` …) and its body (after the
/// netlink header), unparsed.
pub(super) struct Raw {
    pub(super) kind: u16,
    pub(super) body: Vec<u8>,
}

impl Wire {
    /// Opens and binds the socket (in the calling thread's network namespace).
    pub(super) fn connect() -> io::Result<Wire> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let _ = socket.set_rx_buf_sz(RCVBUF); // capped by rmem_max; the default is enough for IN_FLIGHT
        Ok(Wire { socket, queue: Mutex::new(Queue::default()) })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned queue is still a consistent queue.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request the kernel only acknowledges (`NLM_F_ACK` in `flags`).
    pub(super) async fn ack(&self, body: RouteNetlinkMessage, flags: u16) -> Result<(), rtnetlink::Error> {
        match self.call(body, flags).await? {
            Answer::Ack => Ok(()),
            Answer::Message(_) => Err(rtnetlink::Error::RequestFailed),
        }
    }

    /// A request with exactly one answer (a route lookup, one link by name).
    pub(super) async fn one(&self, body: RouteNetlinkMessage) -> Result<Raw, rtnetlink::Error> {
        match self.call(body, NLM_F_REQUEST).await? {
            Answer::Message(m) => Ok(m),
            Answer::Ack => Err(rtnetlink::Error::RequestFailed),
        }
    }

    async fn call(&self, body: RouteNetlinkMessage, flags: u16) -> Result<Answer, rtnetlink::Error> {
        let seq = self.queue().push(body, flags);
        YieldOnce(false).await;
        let mut q = self.queue();
        if !q.answers.contains_key(&seq) {
            q.exchange(&self.socket)?;
        }
        q.answers.remove(&seq).unwrap_or(Err(rtnetlink::Error::RequestFailed))
    }

    /// A dump: every message up to `NLMSG_DONE`. Requests queued before it are answered first.
    pub(super) async fn dump(&self, body: RouteNetlinkMessage) -> Result<Vec<Raw>, rtnetlink::Error> {
        // Let whatever runs alongside (the Docker query) send its request before we read.
        YieldOnce(false).await;
        let mut q = self.queue();
        q.exchange(&self.socket)?;
        let seq = q.push(body, NLM_F_REQUEST | NLM_F_DUMP);
        q.unsent.clear();
        let sent = self.socket.send(&q.out, 0);
        q.out.clear();
        sent.map_err(failed)?;
        q.read_dump(&self.socket, seq)
    }
}

impl Queue {
    /// Queues a request; returns its sequence number.
    fn push(&mut self, body: RouteNetlinkMessage, flags: u16) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = NetlinkMessage::from(body);
        msg.header.flags = flags;
        msg.header.sequence_number = self.seq;
        msg.finalize();
        let start = self.out.len();
        // NLMSG_ALIGN: netlink_rcv_skb finds the next message at the aligned length.
        self.out.resize(start + msg.buffer_len().next_multiple_of(4), 0);
        msg.serialize(&mut self.out[start..]);
        self.unsent.push(self.seq);
        self.seq
    }

    /// Sends what is queued and reads until every request sent is answered.
    fn exchange(&mut self, socket: &Socket) -> Result<(), rtnetlink::Error> {
        if !self.out.is_empty() {
            let sent = socket.send(&self.out, 0);
            self.out.clear();
            let batch = std::mem::take(&mut self.unsent);
            if let Err(e) = sent {
                self.fail(batch);
                return Err(failed(e));
            }
            self.waiting.extend(batch);
        }
        while !self.waiting.is_empty() {
            if let Err(e) = self.receive(socket) {
                let lost: Vec<u32> = self.waiting.drain().collect();
                self.fail(lost);
                return Err(e);
            }
            let mut at = 0;
            while let Some((seq, kind, len)) = header(&self.buf[at..]) {
                if self.waiting.remove(&seq) {
                    let answer = answer(&self.buf[at..at + len], kind);
                    self.answers.insert(seq, answer);
                }
                at += len.next_multiple_of(4);
            }
        }
        Ok(())
    }

    /// Reads the parts of dump `seq` up to `NLMSG_DONE` (or its error).
    fn read_dump(&mut self, socket: &Socket, seq: u32) -> Result<Vec<Raw>, rtnetlink::Error> {
        let mut out = Vec::new();
        loop {
            self.receive(socket)?;
            let mut at = 0;
            while let Some((s, kind, len)) = header(&self.buf[at..]) {
                let msg = &self.buf[at..at + len];
                at += len.next_multiple_of(4);
                if s != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => return Err(answer(msg, kind).err().unwrap_or(rtnetlink::Error::RequestFailed)),
                    _ => out.push(Raw { kind, body: msg[HEADER..].to_vec() }),
                }
            }
        }
    }

    /// Reads one datagram into `buf`.
    fn receive(&mut self, socket: &Socket) -> Result<(), rtnetlink::Error> {
        self.buf.clear();
        self.buf.reserve(DATAGRAM);
        socket.recv(&mut self.buf, 0).map_err(failed)?;
        Ok(())
    }

    fn fail(&mut self, seqs: Vec<u32>) {
        for s in seqs {
            self.answers.insert(s, Err(rtnetlink::Error::RequestFailed));
        }
    }
}

/// Sequence number, type and length of the message at the start of `buf`, if a whole one is there.
fn header(buf: &[u8]) -> Option<(u32, u16, usize)> {
    let b = NetlinkBuffer::new_checked(buf).ok()?;
    Some((b.sequence_number(), b.message_type(), b.length() as usize))
}

/// The netlink header's length: a message's body starts there.
const HEADER: usize = 16;

/// The answer to a request: an ack, a message, or the kernel's error as rtnetlink reports it.
fn answer(msg: &[u8], kind: u16) -> Result<Answer, rtnetlink::Error> {
    if kind != NLMSG_ERROR {
        return Ok(Answer::Message(Raw { kind, body: msg[HEADER..].to_vec() }));
    }
    let body = &msg[HEADER..];
    let error = ErrorBuffer::new_checked(&body).and_then(|b| ErrorMessage::parse(&b));
    match error {
        Ok(e) if e.code.is_none() => Ok(Answer::Ack),
        Ok(e) => Err(rtnetlink::Error::NetlinkError(e)),
        Err(_) => Err(rtnetlink::Error::RequestFailed),
    }
}

/// A socket error: rtnetlink reports those as a failed request.
fn failed(_: io::Error) -> rtnetlink::Error {
    rtnetlink::Error::RequestFailed
}

/// Returns `Pending` once (waking itself at once), so that futures polled alongside get to
/// queue their requests before the first of them sends.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
