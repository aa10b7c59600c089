//! One reliable stream: the state machine, sans I/O.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use super::segment::{Kind, Segment};

/// Largest data in one segment (fits the overlay payload with the header).
pub const MSS: usize = 1400;
/// Send and receive buffer sizes (the window). 512 KiB instead of 256 KiB
/// moved one flow through line3 from 55-58 to 62-71 MB/s once the console
/// no longer held it back (1 MiB: 67-74 MB/s, for twice the memory a
/// bulk stream may hold in a node's 64 MiB).
pub const BUF: usize = 512 * 1024;
const INITIAL_RTO_US: u64 = 300_000;
const MIN_RTO_US: u64 = 30_000;
const MAX_RTO_US: u64 = 4_000_000;
/// Consecutive timeouts after which the path is declared dead.
const MAX_TIMEOUTS: u32 = 10;

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Initiator: SYN sent, no answer yet.
    SynSent,
    /// Acceptor: SYN received; waiting for [`Stream::confirm`] or
    /// [`Stream::refuse`].
    SynReceived,
    /// Data flows.
    Established,
    /// Both directions finished and acknowledged.
    Closed,
    /// Aborted by either end, or the path died.
    Reset,
}

fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// A reliable, ordered byte stream over datagrams.
pub struct Stream {
    state: StreamState,
    /// What the SYN carries (the destination), initiator only.
    open_info: Vec<u8>,
    syn_acked: bool,
    confirmed: bool,

    // Sending.
    snd_una: u32,
    snd_nxt: u32,
    /// Highest sequence number ever sent (after a timeout `snd_nxt` goes
    /// back, but acknowledgements up to here are still valid).
    snd_max: u32,
    sbuf: VecDeque<u8>,
    sbuf_seq: u32,
    fin_queued: bool,
    peer_wnd: usize,
    cwnd: usize,
    ssthresh: usize,
    dupacks: u32,
    /// Duplicate acks that mean a loss (3, as TCP; more where packets
    /// take paths of different delay and arrive out of order anyway).
    dupack_threshold: u32,
    recover: Option<u32>,
    fast_rtx: bool,
    /// Most data bytes per segment (smaller when segments ride in cells).
    mss: usize,
    rto_us: u64,
    rto_deadline: Option<u64>,
    timeouts: u32,
    srtt_us: Option<u64>,
    rttvar_us: u64,
    rtt_probe: Option<(u32, u64)>,

    // Receiving.
    rcv_nxt: u32,
    rbuf: VecDeque<u8>,
    ooo: BTreeMap<u32, Vec<u8>>,
    ooo_bytes: usize,
    peer_fin: Option<u32>,
    peer_finished: bool,
    ack_pending: bool,
    advertised: usize,
    /// Data bytes the initiator may send before the SYN is answered
    /// ([`Stream::set_optimistic`]).
    optimistic: usize,
    /// Data bytes sent before the SYN was answered.
    sent_early: usize,
    /// Acceptor: the initiator sent data behind its SYN, so its path keeps
    /// order and the answer's data may ride right behind the SYN-ACK.
    peer_early: bool,
    /// Most bytes the receive side holds ([`Stream::set_window_cap`]).
    window_cap: usize,
    /// Why the stream was reset ([`reset_reason`]): what the acceptor
    /// refused with, sent as the RST's one data byte.
    reset_reason: u8,
}

/// Why an acceptor refused a stream, carried in its RST (an RST without
/// one is [`reset_reason::REFUSED`]).
pub mod reset_reason {
    /// The service is down or unreachable (or no reason was given).
    pub const REFUSED: u8 = 0;
    /// The destination's policy refuses the service (an exit's policy,
    /// checked on every address a name resolved to).
    pub const NOT_ALLOWED: u8 = 1;
}

impl Stream {
    fn new(state: StreamState) -> Self {
        Self {
            state,
            open_info: Vec::new(),
            syn_acked: false,
            confirmed: false,
            reset_reason: reset_reason::REFUSED,
            snd_una: 0,
            snd_nxt: 0,
            snd_max: 0,
            sbuf: VecDeque::new(),
            sbuf_seq: 1,
            fin_queued: false,
            peer_wnd: MSS * 4,
            cwnd: MSS * 10,
            ssthresh: BUF,
            dupacks: 0,
            dupack_threshold: 3,
            recover: None,
            fast_rtx: false,
            mss: MSS,
            rto_us: INITIAL_RTO_US,
            rto_deadline: None,
            timeouts: 0,
            srtt_us: None,
            rttvar_us: 0,
            rtt_probe: None,
            rcv_nxt: 0,
            rbuf: VecDeque::new(),
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            peer_fin: None,
            peer_finished: false,
            ack_pending: false,
            advertised: BUF,
            optimistic: 0,
            sent_early: 0,
            peer_early: false,
            window_cap: BUF,
        }
    }

    /// Opens a stream; `open_info` (the destination) rides in the SYN.
    pub fn connect(open_info: &[u8]) -> Self {
        let mut s = Self::new(StreamState::SynSent);
        s.open_info = open_info.to_vec();
        s.snd_nxt = 0;
        s
    }

    /// The acceptor's side of a received SYN. Returns the stream and the
    /// SYN's open info, or `None` if `seg` is not a SYN.
    pub fn accept(seg: &Segment<'_>) -> Option<(Self, Vec<u8>)> {
        if seg.kind != Kind::Syn {
            return None;
        }
        let mut s = Self::new(StreamState::SynReceived);
        s.rcv_nxt = seg.seq.wrapping_add(1);
        s.snd_una = 0;
        s.snd_nxt = 0;
        s.peer_wnd = seg.window_kib as usize * 1024;
        Some((s, seg.data.to_vec()))
    }

    /// Lets the initiator send up to `bytes` of data right behind its SYN,
    /// before the answer (Tor's optimistic data): the app's first bytes
    /// reach the destination with the opening instead of a round trip
    /// later. The acceptor holds them until the service is connected and
    /// drops them with the stream if it is refused. Only for paths that
    /// keep the SYN ahead of its data (a segment that arrives before its
    /// stream's SYN is dropped and waits for a retransmission).
    pub fn set_optimistic(&mut self, bytes: usize) {
        self.optimistic = bytes;
    }

    /// Data bytes sent before the SYN was answered.
    pub fn sent_early(&self) -> usize {
        self.sent_early
    }

    /// Bytes the stream holds in memory: unacknowledged and unsent data,
    /// received data not yet read, out-of-order data.
    pub fn buffered(&self) -> usize {
        self.sbuf.len() + self.rbuf.len() + self.ooo_bytes
    }

    /// Bytes the receive side holds (read not yet, or out of order).
    pub fn received_held(&self) -> usize {
        self.rbuf.len() + self.ooo_bytes
    }

    /// Limits what the receive side holds to `cap` bytes (at most [`BUF`]):
    /// a node short of memory for all its streams closes their windows, and
    /// data beyond the window is dropped and sent again later, never lost.
    pub fn set_window_cap(&mut self, cap: usize) {
        self.window_cap = cap.min(BUF);
    }

    /// Limits data segments to `mss` bytes (at most [`MSS`]), for carriers
    /// with less room than an overlay packet, like onion cells.
    pub fn set_mss(&mut self, mss: usize) {
        self.mss = mss.clamp(1, MSS);
    }

    /// Sends an acknowledgement at the next chance even with nothing new
    /// to acknowledge: it tells a peer whose path changed that this end
    /// hears it again.
    pub fn ack_now(&mut self) {
        if self.state == StreamState::Established {
            self.ack_pending = true;
        }
    }

    /// The stream's packets take a new path from now (an onion circuit
    /// replaced one whose relay died): what the old path taught (its RTT,
    /// the timer's back-off, the window) says nothing of the new one, so
    /// start over as RFC 6298 allows after a route change, resend what is
    /// unacknowledged at once, and acknowledge so the peer hears the path.
    pub fn path_changed(&mut self, now_us: u64) {
        if self.state != StreamState::Established {
            return;
        }
        self.timeouts = 0;
        self.rto_us = INITIAL_RTO_US;
        self.srtt_us = None;
        self.rttvar_us = 0;
        self.rtt_probe = None;
        self.recover = None;
        self.dupacks = 0;
        self.cwnd = self.cwnd.min(10 * self.mss).max(2 * self.mss);
        if self.flight() > 0 {
            self.snd_nxt = self.snd_una;
            self.rto_deadline = Some(now_us + self.rto_us);
        }
        self.ack_pending = true;
    }

    /// Takes `n` duplicate acknowledgements (at least 3) as the sign of a
    /// loss: a stream spread over paths of different delay sees segments
    /// overtake each other all the time, and halving its window for each
    /// such reordering would throttle it for nothing. Losses beyond are
    /// still repaired, by the retransmission timer at worst.
    pub fn set_reorder_tolerance(&mut self, n: u32) {
        self.dupack_threshold = n.max(3);
    }

    /// The acceptor agrees: the SYN-ACK goes out.
    pub fn confirm(&mut self) {
        if self.state == StreamState::SynReceived {
            self.confirmed = true;
        }
    }

    /// The acceptor refuses (e.g. the service is down): an RST goes out.
    pub fn refuse(&mut self) {
        self.refuse_because(reset_reason::REFUSED);
    }

    /// [`Stream::refuse`], telling the initiator why ([`reset_reason`]).
    pub fn refuse_because(&mut self, reason: u8) {
        self.reset_reason = reason;
        // A stream refused before it was accepted hands over nothing it
        // held (optimistic data).
        if self.state == StreamState::SynReceived && !self.confirmed {
            self.rbuf.clear();
        }
        self.state = StreamState::Reset;
        self.ack_pending = true;
    }

    /// Why the stream was reset ([`reset_reason`]; `REFUSED` if it was
    /// not, or no reason came).
    pub fn reset_reason(&self) -> u8 {
        self.reset_reason
    }

    /// Current state.
    pub fn state(&self) -> StreamState {
        self.state
    }

    /// Queues bytes to send; returns how many fit in the send buffer.
    pub fn write(&mut self, data: &[u8]) -> usize {
        if self.fin_queued || matches!(self.state, StreamState::Closed | StreamState::Reset) {
            return 0;
        }
        let n = data.len().min(BUF - self.sbuf.len());
        self.sbuf.extend(&data[..n]);
        n
    }

    /// Bytes that can be queued now.
    pub fn send_room(&self) -> usize {
        if self.fin_queued {
            0
        } else {
            BUF - self.sbuf.len()
        }
    }

    /// No more data will be written.
    pub fn close(&mut self) {
        self.fin_queued = true;
    }

    /// Takes received bytes, in order; none before the stream is accepted
    /// (optimistic data waits for [`Stream::confirm`]).
    pub fn read(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        if self.state == StreamState::SynReceived && !self.confirmed {
            return 0;
        }
        let n = self.rbuf.len().min(max);
        out.extend(self.rbuf.drain(..n));
        // Reopening a window the peer may be stalled on deserves an ACK.
        if self.advertised < self.mss && self.free_rcv() >= self.mss {
            self.ack_pending = true;
        }
        n
    }

    /// Whether the peer has finished and every byte has been read.
    pub fn peer_finished(&self) -> bool {
        self.peer_finished && self.rbuf.is_empty()
    }

    /// Whether everything written (and the FIN) has been acknowledged.
    pub fn all_acked(&self) -> bool {
        self.fin_queued && self.snd_una == self.fin_seq().wrapping_add(1)
    }

    fn fin_seq(&self) -> u32 {
        self.sbuf_seq.wrapping_add(self.sbuf.len() as u32)
    }

    fn free_rcv(&self) -> usize {
        self.window_cap.saturating_sub(self.rbuf.len() + self.ooo_bytes)
    }

    fn flight(&self) -> usize {
        self.snd_nxt.wrapping_sub(self.snd_una) as usize
    }

    /// Handles one received segment at time `now_us`.
    pub fn on_segment(&mut self, now_us: u64, seg: &Segment<'_>) {
        if self.state == StreamState::Closed {
            // The peer did not get our last ACK: it resends its FIN.
            if seg.kind == Kind::Fin {
                self.ack_pending = true;
            }
            return;
        }
        if self.state == StreamState::Reset {
            return;
        }
        match seg.kind {
            Kind::Rst => {
                self.state = StreamState::Reset;
                self.reset_reason = seg.data.first().copied().unwrap_or(reset_reason::REFUSED);
                return;
            }
            Kind::Syn => {
                // A retransmitted SYN: our SYN-ACK was lost; send it again.
                if self.state == StreamState::SynReceived || self.state == StreamState::Established {
                    self.syn_acked = false;
                }
                return;
            }
            Kind::SynAck => {
                // It acknowledges the SYN, and any data sent behind it that
                // the acceptor held.
                let sent = if self.snd_max == 0 { 1 } else { self.snd_max };
                if self.state == StreamState::SynSent && !before(seg.ack, 1) && !before(sent, seg.ack) {
                    self.state = StreamState::Established;
                    self.rcv_nxt = seg.seq.wrapping_add(1);
                    self.snd_una = 1;
                    self.snd_nxt = self.snd_nxt.max(1);
                    self.snd_max = sent;
                    self.rto_deadline = None;
                    self.timeouts = 0;
                    self.sample_rtt(now_us, 1);
                    if seg.ack != 1 {
                        self.on_ack(now_us, seg.ack, false);
                    }
                    if self.flight() > 0 {
                        self.rto_deadline = Some(now_us + self.rto_us);
                    }
                }
                // Acknowledge it (also when duplicated) so the acceptor stops resending.
                self.ack_pending = true;
                self.peer_wnd = seg.window_kib as usize * 1024;
                return;
            }
            Kind::Data | Kind::Fin => {}
        }
        if self.state == StreamState::SynReceived {
            if !self.confirmed {
                // Optimistic data: held (unacknowledged, unread by the
                // service side until it is connected) until the answer.
                if seg.kind == Kind::Data && !seg.data.is_empty() {
                    self.peer_early = true;
                    self.on_data(seg.seq, seg.data);
                }
                return;
            }
            // The initiator's first ACK or data completes the handshake
            // (data the acceptor sent behind its SYN-ACK stays in flight).
            self.state = StreamState::Established;
            if self.snd_nxt == 0 {
                self.snd_una = 1;
                self.snd_nxt = 1;
                self.snd_max = 1;
            }
        }
        if self.state == StreamState::SynSent {
            return;
        }
        self.peer_wnd = seg.window_kib as usize * 1024;
        self.on_ack(now_us, seg.ack, seg.data.is_empty() && seg.kind == Kind::Data);
        if seg.kind == Kind::Fin {
            self.peer_fin = Some(seg.seq);
            self.ack_pending = true;
        } else if !seg.data.is_empty() {
            self.on_data(seg.seq, seg.data);
        }
        if self.peer_fin == Some(self.rcv_nxt) && !self.peer_finished {
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.peer_finished = true;
        }
        if self.peer_finished && self.all_acked() {
            self.state = StreamState::Closed;
        }
    }

    fn on_data(&mut self, seq: u32, data: &[u8]) {
        self.ack_pending = true;
        let (mut seq, mut data) = (seq, data);
        if before(seq, self.rcv_nxt) {
            let skip = self.rcv_nxt.wrapping_sub(seq) as usize;
            if skip >= data.len() {
                return;
            }
            data = &data[skip..];
            seq = self.rcv_nxt;
        }
        if seq == self.rcv_nxt {
            let n = data.len().min(self.free_rcv());
            self.rbuf.extend(&data[..n]);
            self.rcv_nxt = self.rcv_nxt.wrapping_add(n as u32);
            while let Some(e) = self.ooo.first_entry() {
                let s = *e.key();
                if before(self.rcv_nxt, s) {
                    break;
                }
                let chunk = e.remove();
                self.ooo_bytes -= chunk.len();
                let skip = self.rcv_nxt.wrapping_sub(s) as usize;
                if skip < chunk.len() {
                    let n = (chunk.len() - skip).min(self.free_rcv());
                    self.rbuf.extend(&chunk[skip..skip + n]);
                    self.rcv_nxt = self.rcv_nxt.wrapping_add(n as u32);
                }
            }
        } else if data.len() <= self.free_rcv() && !self.ooo.contains_key(&seq) {
            self.ooo_bytes += data.len();
            self.ooo.insert(seq, data.to_vec());
        }
    }

    fn sample_rtt(&mut self, now_us: u64, acked_to: u32) {
        let Some((seq, sent)) = self.rtt_probe else { return };
        if before(seq, acked_to) {
            self.rtt_probe = None;
            let r = now_us.saturating_sub(sent);
            match self.srtt_us {
                None => {
                    self.srtt_us = Some(r);
                    self.rttvar_us = r / 2;
                }
                Some(s) => {
                    self.rttvar_us = (3 * self.rttvar_us + s.abs_diff(r)) / 4;
                    self.srtt_us = Some((7 * s + r) / 8);
                }
            }
            let srtt = self.srtt_us.unwrap_or(r);
            self.rto_us = (srtt + 4 * self.rttvar_us).clamp(MIN_RTO_US, MAX_RTO_US);
        }
    }

    fn on_ack(&mut self, now_us: u64, ack: u32, pure: bool) {
        if before(self.snd_una, ack) && !before(self.snd_max, ack) {
            let acked = ack.wrapping_sub(self.snd_una) as usize;
            if before(self.snd_nxt, ack) {
                // Acknowledges what was sent before a timeout rewound us.
                self.snd_nxt = ack;
            }
            self.sample_rtt(now_us, ack);
            // Drop acknowledged data from the send buffer (the FIN is not in it).
            let data_acked = ack.wrapping_sub(self.sbuf_seq) as usize;
            let drain = data_acked.min(self.sbuf.len());
            self.sbuf.drain(..drain);
            self.sbuf_seq = self.sbuf_seq.wrapping_add(drain as u32);
            self.snd_una = ack;
            self.timeouts = 0;
            self.dupacks = 0;
            match self.recover {
                Some(r) if !before(ack, r) => {
                    self.recover = None;
                    self.cwnd = self.ssthresh;
                }
                Some(_) => self.fast_rtx = true,
                None if self.cwnd < self.ssthresh => self.cwnd += acked.min(self.mss),
                None => self.cwnd += (self.mss * self.mss / self.cwnd).max(1),
            }
            self.rto_deadline = (self.flight() > 0).then_some(now_us + self.rto_us);
        } else if pure && ack == self.snd_una && self.flight() > 0 {
            self.dupacks += 1;
            if self.dupacks == self.dupack_threshold && self.recover.is_none() {
                self.ssthresh = (self.flight() / 2).max(2 * self.mss);
                self.cwnd = self.ssthresh + 3 * self.mss;
                self.recover = Some(self.snd_nxt);
                self.fast_rtx = true;
                self.rtt_probe = None;
            }
        }
    }

    /// The next moment `poll_transmit` has something to do, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.rto_deadline
    }

    fn emit(&mut self, kind: Kind, seq: u32, data: &[u8], out: &mut Vec<u8>) {
        let free = self.free_rcv();
        self.advertised = free;
        let window_kib = (free / 1024).min(u16::MAX as usize) as u16;
        Segment { kind, window_kib, seq, ack: self.rcv_nxt, data }.emit(out);
        self.ack_pending = false;
    }

    fn data_segment(&mut self, seq: u32, out: &mut Vec<u8>) -> bool {
        let off = seq.wrapping_sub(self.sbuf_seq) as usize;
        if off >= self.sbuf.len() {
            return false;
        }
        let n = (self.sbuf.len() - off).min(self.mss);
        let (a, b) = self.sbuf.as_slices();
        let mut chunk = Vec::with_capacity(n);
        for &byte in a.iter().chain(b.iter()).skip(off).take(n) {
            chunk.push(byte);
        }
        self.emit(Kind::Data, seq, &chunk, out);
        true
    }

    /// The next optimistic data segment behind a SYN already sent, within
    /// [`Stream::set_optimistic`]'s allowance and the initial window.
    /// Only the SYN is retransmitted while unanswered; data lost here is
    /// resent once the stream is established.
    fn early_segment(&mut self, now_us: u64, out: &mut Vec<u8>) -> bool {
        if self.optimistic == 0 || self.rto_deadline.is_none() {
            return false;
        }
        // Data starts after the SYN's sequence number.
        let seq = self.snd_nxt.max(1);
        if self.sent_early >= self.optimistic.min(self.cwnd) || !self.data_segment(seq, out) {
            return false;
        }
        let len = out.len() - super::segment::HEADER_LEN;
        self.sent_early += len;
        self.snd_nxt = seq.wrapping_add(len as u32);
        self.snd_max = self.snd_nxt;
        self.rtt_probe.get_or_insert((0, now_us));
        true
    }

    /// Produces the next segment to send into `out` (cleared first);
    /// false when there is nothing to send now. Call until false.
    pub fn poll_transmit(&mut self, now_us: u64, out: &mut Vec<u8>) -> bool {
        out.clear();
        match self.state {
            StreamState::Closed => {
                if self.ack_pending {
                    self.emit(Kind::Data, self.snd_nxt, &[], out);
                    return true;
                }
                return false;
            }
            StreamState::Reset => {
                if self.ack_pending {
                    let reason = [self.reset_reason];
                    let data: &[u8] = if self.reset_reason == reset_reason::REFUSED { &[] } else { &reason };
                    self.emit(Kind::Rst, self.snd_nxt, data, out);
                    return true;
                }
                return false;
            }
            StreamState::SynSent => {
                let due = self.rto_deadline.is_none_or(|d| now_us >= d);
                if !due {
                    return self.early_segment(now_us, out);
                }
                if self.rto_deadline.is_some() && self.on_timeout(now_us) {
                    self.state = StreamState::Reset;
                    return false;
                }
                let info = core::mem::take(&mut self.open_info);
                self.emit(Kind::Syn, 0, &info, out);
                self.open_info = info;
                self.rtt_probe.get_or_insert((0, now_us));
                self.rto_deadline = Some(now_us + self.rto_us);
                return true;
            }
            StreamState::SynReceived => {
                if self.confirmed && !self.syn_acked {
                    self.syn_acked = true;
                    self.emit(Kind::SynAck, 0, &[], out);
                    return true;
                }
                // An optimistic opening is answered in kind: the service's
                // first bytes go right behind the SYN-ACK instead of waiting
                // for the initiator's acknowledgement of it.
                if !(self.confirmed && self.peer_early) {
                    return false;
                }
                if self.snd_nxt == 0 {
                    self.snd_una = 1;
                    self.snd_nxt = 1;
                    self.snd_max = 1;
                }
            }
            StreamState::Established => {}
        }
        // Acceptor: re-answer a repeated SYN.
        if self.confirmed && !self.syn_acked {
            self.syn_acked = true;
            self.emit(Kind::SynAck, 0, &[], out);
            return true;
        }
        // Retransmission timeout: go back to the first unacknowledged byte.
        if self.rto_deadline.is_some_and(|d| now_us >= d) {
            if self.on_timeout(now_us) {
                self.state = StreamState::Reset;
                self.ack_pending = true;
                return self.poll_transmit(now_us, out);
            }
            self.snd_nxt = self.snd_una;
        }
        if self.fast_rtx {
            self.fast_rtx = false;
            let una = self.snd_una;
            if self.data_segment(una, out) {
                self.rto_deadline = Some(now_us + self.rto_us);
                return true;
            }
        }
        let limit = self.cwnd.min(self.peer_wnd.max(self.mss));
        if self.flight() < limit {
            let seq = self.snd_nxt;
            if self.data_segment(seq, out) {
                let len = out.len() - super::segment::HEADER_LEN;
                self.snd_nxt = self.snd_nxt.wrapping_add(len as u32);
                if before(self.snd_max, self.snd_nxt) {
                    self.snd_max = self.snd_nxt;
                }
                if self.rtt_probe.is_none() {
                    self.rtt_probe = Some((seq, now_us));
                }
                self.rto_deadline.get_or_insert(now_us + self.rto_us);
                return true;
            }
            if self.fin_queued && self.snd_nxt == self.fin_seq() {
                let fin = self.snd_nxt;
                self.emit(Kind::Fin, fin, &[], out);
                self.snd_nxt = fin.wrapping_add(1);
                if before(self.snd_max, self.snd_nxt) {
                    self.snd_max = self.snd_nxt;
                }
                self.rto_deadline.get_or_insert(now_us + self.rto_us);
                return true;
            }
        }
        if self.ack_pending {
            self.emit(Kind::Data, self.snd_nxt, &[], out);
            return true;
        }
        false
    }

    /// A retransmission timer fired: back off. True if the path is dead.
    fn on_timeout(&mut self, now_us: u64) -> bool {
        self.timeouts += 1;
        if self.timeouts > MAX_TIMEOUTS {
            return true;
        }
        self.ssthresh = (self.flight() / 2).max(2 * self.mss);
        self.cwnd = self.mss;
        self.recover = None;
        self.dupacks = 0;
        self.rtt_probe = None;
        self.rto_us = (self.rto_us * 2).min(MAX_RTO_US);
        self.rto_deadline = Some(now_us + self.rto_us);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::segment::Segment;
    use alloc::vec;

    /// Every segment `s` has to send now, parsed back into owned form.
    fn drain(s: &mut Stream, now: u64) -> Vec<Vec<u8>> {
        let mut segs = Vec::new();
        let mut out = Vec::new();
        while s.poll_transmit(now, &mut out) {
            segs.push(out.clone());
        }
        segs
    }

    fn kind(seg: &[u8]) -> Kind {
        Segment::parse(seg).unwrap().kind
    }

    #[test]
    fn optimistic_data_rides_behind_the_syn_and_is_acknowledged_by_the_answer() {
        let mut a = Stream::connect(b"service:80");
        a.set_optimistic(4 * MSS);
        let request = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(a.write(request), request.len());
        let sent = drain(&mut a, 0);
        assert_eq!(sent.iter().map(|s| kind(s)).collect::<Vec<_>>(), [Kind::Syn, Kind::Data]);
        assert_eq!(a.sent_early(), request.len());
        let (mut b, _) = Stream::accept(&Segment::parse(&sent[0]).unwrap()).unwrap();
        b.on_segment(10, &Segment::parse(&sent[1]).unwrap());
        let mut got = Vec::new();
        assert_eq!(b.read(&mut got, usize::MAX), 0, "nothing reaches the service before it is connected");
        assert!(drain(&mut b, 10).is_empty(), "no answer before the service is connected");
        b.confirm();
        b.write(b"HTTP/1.1 200 OK");
        let answer = drain(&mut b, 20);
        assert_eq!(answer.iter().map(|s| kind(s)).collect::<Vec<_>>(), [Kind::SynAck, Kind::Data], "answered in kind");
        assert_eq!(Segment::parse(&answer[0]).unwrap().ack, 1 + request.len() as u32);
        b.read(&mut got, usize::MAX);
        assert_eq!(got, request);
        for seg in &answer {
            a.on_segment(30, &Segment::parse(seg).unwrap());
        }
        assert_eq!(a.state(), StreamState::Established);
        assert_eq!(a.send_room(), BUF, "the answer acknowledged the early data");
        let mut reply = Vec::new();
        a.read(&mut reply, usize::MAX);
        assert_eq!(reply, b"HTTP/1.1 200 OK", "the service's first bytes came with the answer");
        // Only the handshake's ACK follows, no resend of the data, ever.
        let after = drain(&mut a, 10_000_000);
        assert!(after.iter().all(|s| Segment::parse(s).unwrap().data.is_empty()), "{after:?}");
    }

    #[test]
    fn early_data_that_is_lost_is_resent_once_the_stream_is_up() {
        let mut a = Stream::connect(b"service:80");
        a.set_optimistic(4 * MSS);
        a.write(b"hello");
        let sent = drain(&mut a, 0);
        let (mut b, _) = Stream::accept(&Segment::parse(&sent[0]).unwrap()).unwrap();
        b.confirm();
        let answer = drain(&mut b, 10);
        a.on_segment(20, &Segment::parse(&answer[0]).unwrap());
        assert_eq!(a.state(), StreamState::Established);
        let mut got = Vec::new();
        for t in (1..40).map(|i| 20 + i * 50_000) {
            for seg in drain(&mut a, t) {
                b.on_segment(t, &Segment::parse(&seg).unwrap());
            }
            b.read(&mut got, usize::MAX);
        }
        assert_eq!(got, b"hello");
    }

    #[test]
    fn a_refused_stream_never_hands_over_its_early_data() {
        let mut a = Stream::connect(b"service:80");
        a.set_optimistic(MSS);
        a.write(b"secret request");
        let sent = drain(&mut a, 0);
        let (mut b, _) = Stream::accept(&Segment::parse(&sent[0]).unwrap()).unwrap();
        b.on_segment(1, &Segment::parse(&sent[1]).unwrap());
        b.refuse();
        let mut got = Vec::new();
        assert_eq!(b.read(&mut got, usize::MAX), 0);
        assert_eq!(b.state(), StreamState::Reset);
    }

    #[test]
    fn without_optimistic_data_only_the_syn_goes_before_the_answer() {
        let mut a = Stream::connect(b"service:80");
        a.write(b"waits");
        let sent = drain(&mut a, 0);
        assert_eq!(sent.len(), 1);
        assert_eq!(kind(&sent[0]), Kind::Syn);
        assert_eq!(a.sent_early(), 0);
        // Nor does the acceptor send data before the handshake completes:
        // the initiator's path may reorder (multipath).
        let (mut b, _) = Stream::accept(&Segment::parse(&sent[0]).unwrap()).unwrap();
        b.confirm();
        b.write(b"banner");
        let answer = drain(&mut b, 10);
        assert_eq!(answer.iter().map(|s| kind(s)).collect::<Vec<_>>(), [Kind::SynAck]);
    }

    /// A simulated network between two streams: delays every segment by
    /// `delay_us`, drops, duplicates and reorders pseudo-randomly.
    struct Net {
        rng: u64,
        loss: u64,
        dup: u64,
        delay_us: u64,
        in_flight: Vec<(u64, bool, Vec<u8>)>,
    }

    impl Net {
        fn rand(&mut self) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng % 100
        }

        fn send(&mut self, now: u64, to_b: bool, seg: &[u8]) {
            if self.rand() < self.loss {
                return;
            }
            let jitter = self.rand() * self.delay_us / 50;
            self.in_flight.push((now + self.delay_us + jitter, to_b, seg.to_vec()));
            if self.rand() < self.dup {
                self.in_flight.push((now + self.delay_us * 2, to_b, seg.to_vec()));
            }
        }
    }

    /// Moves `data` from a to b (and b's refusal or acceptance) until both
    /// streams are done or `limit_us` passes; returns what b read.
    fn transfer(net: &mut Net, data: &[u8], limit_us: u64) -> (Vec<u8>, Stream, Stream) {
        let mut a = Stream::connect(b"service:80");
        let mut b: Option<Stream> = None;
        let mut got = Vec::new();
        let mut sent = 0;
        let mut out = Vec::new();
        let mut now = 0u64;
        while now < limit_us {
            sent += a.write(&data[sent..]);
            if sent == data.len() {
                a.close();
            }
            while a.poll_transmit(now, &mut out) {
                net.send(now, true, &out);
            }
            if let Some(b) = b.as_mut() {
                while b.poll_transmit(now, &mut out) {
                    net.send(now, false, &out);
                }
                b.read(&mut got, usize::MAX);
                if b.peer_finished() {
                    b.close();
                }
            }
            let (due, later): (Vec<_>, Vec<_>) = net.in_flight.drain(..).partition(|(t, _, _)| *t <= now);
            net.in_flight = later;
            for (_, to_b, seg) in due {
                let s = Segment::parse(&seg).unwrap();
                if to_b {
                    match b.as_mut() {
                        Some(b) => b.on_segment(now, &s),
                        None => {
                            let (mut nb, info) = Stream::accept(&s).unwrap();
                            assert_eq!(info, b"service:80");
                            nb.confirm();
                            b = Some(nb);
                        }
                    }
                } else {
                    a.on_segment(now, &s);
                }
            }
            if a.state() == StreamState::Closed && b.as_ref().is_some_and(|b| b.state() == StreamState::Closed) {
                break;
            }
            now += 500;
        }
        (got, a, b.expect("acceptor created"))
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn lossless_transfer_arrives_whole_and_closes() {
        let mut net = Net { rng: 1, loss: 0, dup: 0, delay_us: 1000, in_flight: vec![] };
        let d = data(300_000);
        let (got, a, b) = transfer(&mut net, &d, 20_000_000);
        assert_eq!(got, d);
        assert_eq!((a.state(), b.state()), (StreamState::Closed, StreamState::Closed));
    }

    #[test]
    fn ten_percent_loss_with_duplicates_and_reordering_loses_nothing() {
        let mut net = Net { rng: 42, loss: 10, dup: 5, delay_us: 2000, in_flight: vec![] };
        let d = data(200_000);
        let (got, a, _) = transfer(&mut net, &d, 120_000_000);
        assert_eq!(got.len(), d.len());
        assert!(got == d, "stream corrupted");
        assert_eq!(a.state(), StreamState::Closed);
    }

    #[test]
    fn many_lossy_networks_never_deadlock_or_corrupt() {
        for seed in 1..=12u64 {
            let mut net = Net { rng: seed * 7919, loss: 20, dup: 10, delay_us: 1500, in_flight: vec![] };
            let d = data(60_000 + seed as usize * 1000);
            let (got, a, b) = transfer(&mut net, &d, 300_000_000);
            assert!(
                got == d,
                "seed {seed}: {} of {} bytes, states {:?}/{:?}",
                got.len(),
                d.len(),
                a.state(),
                b.state()
            );
        }
    }

    /// Whether `a` goes into loss recovery when its first data segment
    /// is overtaken by the rest (reordering, not loss).
    fn recovers_after_reordering(tolerance: u32) -> bool {
        let mut a = Stream::connect(b"s:1");
        a.set_reorder_tolerance(tolerance);
        let mut out = Vec::new();
        assert!(a.poll_transmit(0, &mut out));
        let (mut b, _) = Stream::accept(&Segment::parse(&out).unwrap()).unwrap();
        b.confirm();
        out.clear();
        assert!(b.poll_transmit(0, &mut out));
        a.on_segment(0, &Segment::parse(&out).unwrap());
        a.write(&[7u8; 8 * MSS]);
        let mut data_segs = Vec::new();
        loop {
            out.clear();
            if !a.poll_transmit(1, &mut out) {
                break;
            }
            if !Segment::parse(&out).unwrap().data.is_empty() {
                data_segs.push(out.clone());
            }
        }
        assert!(data_segs.len() >= 6, "{} segments in flight", data_segs.len());
        for seg in &data_segs[1..] {
            b.on_segment(2, &Segment::parse(seg).unwrap());
            out.clear();
            while b.poll_transmit(2, &mut out) {
                a.on_segment(3, &Segment::parse(&out).unwrap());
                out.clear();
            }
        }
        a.recover.is_some()
    }

    #[test]
    fn reordering_is_a_loss_for_tcp_defaults_but_not_for_a_multipath_stream() {
        assert!(recovers_after_reordering(3), "three duplicate acks: fast retransmit");
        assert!(!recovers_after_reordering(16), "a tolerant stream waits");
    }

    #[test]
    fn a_new_path_resends_at_once_without_the_old_back_off() {
        let mut a = Stream::connect(b"s:1");
        let mut out = Vec::new();
        assert!(a.poll_transmit(0, &mut out));
        let (mut b, _) = Stream::accept(&Segment::parse(&out).unwrap()).unwrap();
        b.confirm();
        assert!(b.poll_transmit(0, &mut out));
        a.on_segment(0, &Segment::parse(&out).unwrap());
        a.write(&[1u8; 3 * MSS]);
        while a.poll_transmit(1, &mut out) {}
        // The path dies: every retransmission is lost, the timer backs off.
        let mut now = 1;
        for _ in 0..4 {
            now = a.next_deadline().unwrap();
            while a.poll_transmit(now, &mut out) {}
        }
        assert!(a.rto_us > INITIAL_RTO_US, "backed off");
        a.path_changed(now + 1);
        assert_eq!(a.rto_us, INITIAL_RTO_US);
        assert!(a.poll_transmit(now + 1, &mut out), "resends without waiting for the old timer");
        let seg = Segment::parse(&out).unwrap();
        assert_eq!((seg.seq, seg.data.len()), (a.snd_una, MSS), "from the first unacknowledged byte");
    }

    #[test]
    fn refused_stream_resets_the_initiator() {
        let mut a = Stream::connect(b"down:80");
        let mut out = Vec::new();
        assert!(a.poll_transmit(0, &mut out));
        let (mut b, _) = Stream::accept(&Segment::parse(&out).unwrap()).unwrap();
        b.refuse();
        assert!(b.poll_transmit(0, &mut out));
        a.on_segment(1, &Segment::parse(&out).unwrap());
        assert_eq!(a.state(), StreamState::Reset);
        assert_eq!(a.write(b"x"), 0);
    }

    #[test]
    fn a_dead_path_ends_in_reset_not_a_hang() {
        let mut a = Stream::connect(b"x");
        let mut out = Vec::new();
        let mut now = 0;
        while a.state() == StreamState::SynSent && now < 120_000_000 {
            let _ = a.poll_transmit(now, &mut out);
            now += 10_000;
        }
        assert_eq!(a.state(), StreamState::Reset);
    }

    #[test]
    fn garbage_segments_do_not_disturb_an_open_stream() {
        let mut a = Stream::connect(b"x");
        let junk = Segment { kind: Kind::Data, window_kib: 0, seq: 12345, ack: 999_999, data: b"zz" };
        a.on_segment(0, &junk);
        assert_eq!(a.state(), StreamState::SynSent);
    }
}
