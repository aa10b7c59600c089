//! A request VM's one stream: the app's connection, carried from the
//! console (the app's socket, after the edge's SOCKS handshake) to the
//! service on the destination node.
//!
//! The driver moves bytes: app bytes in while [`Router::wants_app_input`],
//! stream bytes out from [`Router::app_output`], the report to the host
//! (which writes the app's SOCKS answer) once [`Router::request_phase`]
//! leaves `Connecting`; the router does the
//! rest in [`Router::poll`] and says when the VM may leave
//! ([`Router::request_done`]).

use alloc::vec::Vec;

use zeroize::Zeroize;

use crate::node::{ConnectTimes, EdgeRequest};
use crate::routing::NodeId;
use crate::transport::e2e::{Binding, E2eSession};
use crate::transport::{Stream, StreamState};
use crate::wire::{Protocol, FLAG_STREAM};

use super::onion::NoCircuit;
use super::streams::fit_stream;
use super::{origin_repr, LinkPort, Router};

/// App bytes that may ride right behind the stream's opening, before the
/// destination answers (optimistic data): an HTTP request or a TLS
/// ClientHello fits.
pub const OPTIMISTIC_BYTES: usize = 4 * crate::transport::stream::MSS;
/// App bytes held for the stream at most before the console waits.
pub const MAX_APP_PENDING: usize = 64 * 1024;
/// Stream bytes taken for the app per pass.
const APP_READ: usize = 64 * 1024;
/// How long a closing stream may wait for its peer before the VM leaves.
pub const GOODBYE_US: u64 = 1_000_000;
/// How long a request waits for the onion keys its stream needs (they
/// come with the link state it pulls at once, and again every
/// [`KEY_PULL_US`](super::control::KEY_PULL_US)) before it is refused.
pub const KEY_WAIT_US: u64 = 1_200_000;
/// How long after its stream last moved a segment a request VM keeps
/// pulling link state. A request VM neither probes nor hears floods: it
/// routes on what its neighbours last told it, which only matters while
/// segments move (a relay that dies mid-transfer is reported down by its
/// neighbours within [`DEAD_AFTER_US`](crate::routing::linkstate::DEAD_AFTER_US),
/// and the stream's retransmissions take the new route). An idle stream
/// asks nothing, so it costs its relays and its host nothing; its first
/// segment after a pause pulls at once.
pub const LINK_STATE_AFTER_TRAFFIC_US: u64 = 2_000_000;

/// Where the request's stream stands, as the app must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPhase {
    /// The stream is being opened; the app waits for its answer.
    Connecting,
    /// The service is connected: tell the app so, then carry bytes.
    Up,
    /// Refused (service down, no route): tell the app so.
    Refused,
    /// No onion circuit reaches the destination while avoiding what the
    /// app avoids: refused before any packet left.
    NoCircuit,
    /// Refused by the destination's policy.
    NotAllowed,
}

impl RequestPhase {
    /// What the request VM writes to [`ports::STREAM`](crate::ports::STREAM)
    /// for this phase (`Connecting` is never reported).
    pub const fn port_value(self) -> u32 {
        match self {
            Self::Connecting | Self::Up => crate::ports::STREAM_UP,
            Self::Refused => crate::ports::STREAM_REFUSED,
            Self::NoCircuit => crate::ports::STREAM_NO_CIRCUIT,
            Self::NotAllowed => crate::ports::STREAM_NOT_ALLOWED,
        }
    }
}

/// The one stream of a request VM.
pub struct RequestStream {
    pub(super) flow: u32,
    pub(super) dst: NodeId,
    pub(super) stream: Stream,
    /// The app has been given its answer.
    pub(super) replied: bool,
    /// The app closed its side.
    pub(super) app_closed: bool,
    /// App bytes the stream had no room for yet.
    pub(super) pending: Vec<u8>,
    /// Stream bytes the console had no room for yet.
    pub(super) backlog: Vec<u8>,
    /// When the stream started closing, to bound the goodbye.
    pub(super) closing_since: Option<u64>,
    /// Nodes the app asked not to relay through.
    pub(super) avoid: Vec<NodeId>,
    /// Refused because no onion circuit could be built.
    pub(super) no_circuit: bool,
    /// The end-to-end session with the destination (not for onion, whose
    /// circuit seals end to end itself).
    pub(super) e2e: Option<E2eSession>,
    /// The stream has its keys (a session, or a circuit): it may send.
    keyed: bool,
    /// When the request VM started, to bound the wait for keys.
    started: u64,
    /// The link-state count at the last try for keys (a try is worth it
    /// only when new link state came in).
    tried_at_lsas: Option<u64>,
    /// When a segment of the stream last came or went.
    last_traffic: u64,
    /// When the stream last sent a keepalive.
    last_keepalive: u64,
    /// The topology-change count the onion circuit was last checked at.
    checked_topology: u64,
    /// When each step of the opening was reached (for the stats page).
    pub(super) times: ConnectTimes,
}

impl RequestStream {
    pub(super) fn new(req: &EdgeRequest, protocol: Protocol, now: u64) -> Self {
        let mut stream = Stream::connect(&req.target);
        fit_stream(&mut stream, protocol);
        // Every protocol but multipath keeps a stream's segments on one
        // path (or each of redundant's two) in order, so data sent behind
        // the opening arrives behind it; multipath's could overtake it on
        // another path and be dropped.
        if protocol != Protocol::Multipath {
            stream.set_optimistic(OPTIMISTIC_BYTES);
        }
        Self {
            flow: req.flow,
            dst: req.dst,
            stream,
            replied: false,
            app_closed: false,
            pending: Vec::new(),
            backlog: Vec::new(),
            closing_since: None,
            avoid: req.avoid.clone(),
            no_circuit: false,
            e2e: None,
            keyed: false,
            started: now,
            tried_at_lsas: None,
            last_traffic: now,
            last_keepalive: now,
            checked_topology: 0,
            times: ConnectTimes::default(),
        }
    }

    /// µs since the request started, at least 1 (0 means "not reached").
    fn since_start(&self, now: u64) -> u64 {
        now.saturating_sub(self.started).max(1)
    }

    /// Records that the stream's answer came, the first time it has one.
    fn note_answer(&mut self, now: u64) {
        if self.times.answered_us == 0 && self.phase() != RequestPhase::Connecting {
            self.times.answered_us = self.since_start(now);
            self.times.early_bytes = self.stream.sent_early() as u64;
        }
    }

    /// Records a link-state request sent while the stream waits for keys.
    pub(super) fn note_lsa_request(&mut self, now: u64) {
        if self.keyed {
            return;
        }
        if self.times.lsa_requested_us == 0 {
            self.times.lsa_requested_us = self.since_start(now);
        }
        self.times.lsa_requests += 1;
    }

    /// A segment of this stream arrived. A bare acknowledgement is no
    /// traffic of its own (the answer to a keepalive, or to data this end
    /// sent and counted already).
    pub(super) fn on_segment(&mut self, now: u64, seg: &crate::transport::Segment<'_>) {
        self.stream.on_segment(now, seg);
        self.note_answer(now);
        if !seg.data.is_empty() || seg.kind != crate::transport::segment::Kind::Data {
            self.last_traffic = now;
        }
    }

    /// Whether the stream still waits for the keys link state brings.
    pub(super) fn waits_for_keys(&self) -> bool {
        !self.keyed
    }

    /// Whether the request still needs its neighbours' link state: while
    /// it waits for keys, opens, closes, or moves segments.
    pub(super) fn wants_link_state(&self, now: u64) -> bool {
        !self.keyed
            || self.stream.state() != StreamState::Established
            || now.saturating_sub(self.last_traffic) < LINK_STATE_AFTER_TRAFFIC_US
    }

    /// When an established stream next owes its destination a keepalive
    /// (every `every_us` of silence; none if 0).
    fn keepalive_at(&self, every_us: u64) -> Option<u64> {
        (every_us > 0 && self.replied && self.stream.state() == StreamState::Established)
            .then(|| self.last_traffic.max(self.last_keepalive) + every_us)
    }

    /// The earliest moment this stream has timed work of its own: a
    /// retransmission, the end of the wait for keys, the end of a goodbye,
    /// a keepalive.
    fn poll_at(&self, keepalive_us: u64) -> Option<u64> {
        let key_wait = (!self.keyed).then_some(self.started + KEY_WAIT_US);
        let goodbye = self.closing_since.map(|t| t + GOODBYE_US + 1);
        [self.stream.next_deadline(), key_wait, goodbye, self.keepalive_at(keepalive_us)].into_iter().flatten().min()
    }

    /// Whether app bytes go into the stream now: while it opens (they ride
    /// behind the opening) and once it is up and the app was answered.
    fn takes_app_bytes(&self) -> bool {
        match self.stream.state() {
            StreamState::SynSent => true,
            StreamState::Established => self.replied,
            _ => false,
        }
    }

    fn phase(&self) -> RequestPhase {
        match self.stream.state() {
            StreamState::Established | StreamState::Closed => RequestPhase::Up,
            StreamState::Reset if self.no_circuit => RequestPhase::NoCircuit,
            StreamState::Reset if self.stream.reset_reason() == crate::transport::stream::reset_reason::NOT_ALLOWED => {
                RequestPhase::NotAllowed
            }
            StreamState::Reset => RequestPhase::Refused,
            _ => RequestPhase::Connecting,
        }
    }
}

impl<L: LinkPort> Router<L> {
    /// Where the request stands (`Connecting` on a node that is no request
    /// VM).
    pub fn request_phase(&self) -> RequestPhase {
        self.request.as_ref().map_or(RequestPhase::Connecting, RequestStream::phase)
    }

    /// Whether the app still waits for its answer while the phase says
    /// what it is.
    pub fn request_reply_due(&self) -> Option<RequestPhase> {
        let r = self.request.as_ref()?;
        let phase = r.phase();
        (!r.replied && phase != RequestPhase::Connecting).then_some(phase)
    }

    /// The driver reported the answer (the host gave it to the app).
    pub fn request_replied(&mut self) {
        if let Some(r) = self.request.as_mut() {
            r.replied = true;
        }
    }

    /// Whether the router takes app bytes now: while the stream opens (an
    /// app may send before its SOCKS answer, as Tor Browser does; the bytes
    /// ride behind the opening) and once it is up and answered.
    pub fn wants_app_input(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.takes_app_bytes() && !r.app_closed && r.pending.len() < MAX_APP_PENDING)
    }

    /// Bytes the app sent.
    pub fn app_input(&mut self, data: &[u8]) {
        if let Some(r) = self.request.as_mut() {
            r.pending.extend_from_slice(data);
            self.stats.app_bytes_in += data.len() as u64;
        }
    }

    /// The app closed its side of the connection.
    pub fn app_closed(&mut self) {
        if let Some(r) = self.request.as_mut() {
            r.app_closed = true;
        }
    }

    /// Stream bytes for the app; call [`Router::app_took`] with what was
    /// written.
    pub fn app_output(&self) -> &[u8] {
        self.request.as_ref().map_or(&[], |r| r.backlog.as_slice())
    }

    /// The app took the first `n` bytes of [`Router::app_output`].
    pub fn app_took(&mut self, n: usize) {
        if let Some(r) = self.request.as_mut() {
            let n = n.min(r.backlog.len());
            r.backlog.drain(..n);
            self.stats.app_bytes_out += n as u64;
        }
    }

    /// Whether the request is over and everything for the links has gone
    /// (the driver also waits for its console to drain).
    pub fn request_done(&self, now: u64) -> bool {
        let Some(r) = self.request.as_ref() else { return true };
        let finished = match r.stream.state() {
            StreamState::Closed => true,
            StreamState::Reset => r.replied,
            _ => r.closing_since.is_some_and(|t| now.saturating_sub(t) > GOODBYE_US),
        };
        finished && self.links_idle()
    }

    /// Whether the request's stream may send: it has a fresh end-to-end
    /// session with the destination's current onion key or (onion) a
    /// circuit through relays' current keys, both from signed link state.
    /// Without them by [`KEY_WAIT_US`], or at once when no circuit can
    /// avoid what the app avoids, the request is refused (for onion, as no
    /// circuit: the app learns why); it is never sent unsealed.
    pub(super) fn request_keyed(&mut self, now: u64) -> bool {
        let lsas = self.stats.lsas_accepted;
        let Some(r) = self.request.as_mut() else { return false };
        if r.keyed {
            return true;
        }
        let late = now.saturating_sub(r.started) >= KEY_WAIT_US;
        if r.tried_at_lsas == Some(lsas) && !late {
            return false;
        }
        r.tried_at_lsas = Some(lsas);
        let (dst, flow) = (r.dst, r.flow);
        let onion = self.protocol == Protocol::Onion;
        // Err(true): no circuit can ever carry the stream.
        let keyed = if onion {
            self.onion_prepare(dst).map_err(|e| e == NoCircuit::NoPath)
        } else if self.routes.shortest.latency_to(dst).is_none() {
            // Keys without a way there (link state handed over at boot
            // that lacks a link): wait for what the pull brings rather
            // than send an opening nobody can forward.
            Err(false)
        } else {
            let session = self.lsdb.onion_key(dst).and_then(|k| {
                // A fresh key for this stream alone.
                let mut ephemeral = [0u8; 32];
                self.onion.rng.fill(&mut ephemeral);
                let binding = Binding { flow, src: self.me, dst };
                let s = E2eSession::initiate(&ephemeral, &k, binding, self.clock.at(now));
                ephemeral.zeroize();
                s
            });
            let ready = session.is_some();
            if let Some(r) = self.request.as_mut() {
                r.e2e = session;
            }
            if ready {
                Ok(())
            } else {
                Err(false)
            }
        };
        let Some(r) = self.request.as_mut() else { return false };
        let mut gave_up = false;
        match keyed {
            Ok(()) => {
                r.keyed = true;
                r.times.keyed_us = r.since_start(now);
            }
            Err(hopeless) if hopeless || late => {
                r.keyed = true;
                r.no_circuit = onion;
                r.stream.refuse();
                r.note_answer(now);
                gave_up = true;
            }
            Err(_) => {}
        }
        self.stats.connect = r.times;
        if gave_up && onion {
            self.notice(super::Notice::NoCircuit);
        }
        keyed.is_ok()
    }

    /// Records how long the request VM's agent took from its entry to its
    /// router's start, for the host's account of a connect (`booted_us`);
    /// nothing on other nodes.
    pub fn note_boot(&mut self, agent_to_router_us: u64) {
        if let Some(r) = self.request.as_mut() {
            r.times.booted_us = agent_to_router_us.max(1);
            self.stats.connect = r.times;
        }
    }

    /// The earliest moment [`Router::poll`] has timed work on a request VM
    /// (`None` on other nodes): its stream's own timers, the next link-state
    /// pull while it wants one (maintenance pace), an onion circuit's
    /// attach retry. Frames and console data come on their own; between
    /// them an idle request VM may sleep until this.
    pub(super) fn request_poll_at(&self) -> Option<u64> {
        let r = self.request.as_ref()?;
        let pull =
            r.wants_link_state(self.next_maintenance).then_some(self.next_lsa_request.max(self.next_maintenance));
        let attach = self.onion_attach_retry_at().map(|t| t.max(self.next_maintenance));
        [r.poll_at(self.keepalive_us()), pull, attach].into_iter().flatten().min()
    }

    /// How often an idle request stream tells its destination it is alive:
    /// a third of the idle timeout, so two may be lost.
    fn keepalive_us(&self) -> u64 {
        self.idle_timeout_us / 3
    }

    /// The request's stream: circuit upkeep (at maintenance pace), bytes
    /// both ways, closing, and its segments onto the links.
    pub(super) fn poll_request(&mut self, now: u64, maintained: bool) -> bool {
        if !self.request_keyed(now) {
            return false;
        }
        let mut worked = false;
        let changes = self.stats.topology_changes;
        let topology_moved = self.request.as_ref().is_some_and(|r| r.checked_topology != changes);
        if (maintained || topology_moved) && self.protocol == Protocol::Onion {
            let dst = self.request.as_mut().map_or(0, |r| {
                r.checked_topology = changes;
                r.dst
            });
            if !self.onion_check(dst, now) {
                if let Some(r) = self.request.as_mut() {
                    r.stream.refuse();
                    r.note_answer(now);
                    self.stats.connect = r.times;
                }
            }
        }
        let (protocol, hop_limit, me, keepalive_us) = (self.protocol, self.hop_limit, self.me, self.keepalive_us());
        let Some(r) = self.request.as_mut() else { return false };
        // An empty acknowledgement: the destination resets a stream it
        // has not heard from for its idle timeout.
        let keepalive = r.keepalive_at(keepalive_us).is_some_and(|t| now >= t);
        if keepalive {
            r.stream.ack_now();
            r.last_keepalive = now;
        }
        if r.takes_app_bytes() && !r.pending.is_empty() {
            let n = r.stream.write(&r.pending);
            r.pending.drain(..n);
            worked |= n > 0;
        }
        if r.replied && r.backlog.len() < APP_READ {
            let mut data = Vec::new();
            if r.stream.read(&mut data, APP_READ) > 0 {
                r.backlog.extend_from_slice(&data);
                worked = true;
            }
        }
        // Either side done: close ours (the app sees its end when the VM
        // exits and the VMM closes the connection).
        let service_done = r.stream.peer_finished() && r.backlog.is_empty();
        // An app that sent its bytes and closed while the stream opens is
        // closed once the stream is up: the goodbye clock must not run
        // while the opening does.
        let app_done = r.app_closed && r.pending.is_empty() && r.stream.state() != StreamState::SynSent;
        if app_done || service_done {
            r.stream.close();
            r.closing_since.get_or_insert(now);
        }
        let mut segments: Vec<Vec<u8>> = Vec::new();
        let mut seg = Vec::new();
        while r.stream.poll_transmit(now, &mut seg) {
            match r.e2e.as_mut() {
                Some(session) => {
                    segments.push(session.sealed(&seg));
                    seg.clear();
                }
                None => segments.push(core::mem::take(&mut seg)),
            }
        }
        let (flow, dst) = (r.flow, r.dst);
        // A keepalive alone is no traffic: it pulls no link state.
        if !segments.is_empty() && !keepalive {
            r.last_traffic = now;
        }
        for seg in segments {
            worked = true;
            let sent = if protocol == Protocol::Onion {
                self.onion_send_forward(dst, &seg, now)
            } else {
                let repr = origin_repr(protocol, FLAG_STREAM, hop_limit, flow, me, dst, seg.len());
                self.send_from_here(repr, &seg)
            };
            if let Err(e) = sent {
                self.stats.drops.count(e);
            }
        }
        worked
    }
}
