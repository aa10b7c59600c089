//! The `edge` role: a request VM carrying one app connection.

use super::*;

/// The one stream of a request VM on an edge host: the app's connection.
pub(super) struct EdgeStream {
    pub(super) flow: u32,
    pub(super) dst: NodeId,
    pub(super) stream: Stream,
    /// The SOCKS reply has been written to the app.
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
}

/// SOCKS5 replies the request VM writes to the app (RFC 1928: version,
/// code, reserved, IPv4, 0.0.0.0:0).
pub(super) const SOCKS_OK: [u8; 10] = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
pub(super) const SOCKS_REFUSED: [u8; 10] = [5, 5, 0, 1, 0, 0, 0, 0, 0, 0];
/// How long a closing stream may wait for its peer before the VM leaves.
pub(super) const GOODBYE_US: u64 = 1_000_000;

/// A request VM: carries one app connection (the console, after the edge
/// daemon's SOCKS handshake) as a stream to the service on the
/// destination node, answers the SOCKS request when the stream is up or
/// refused, and exits when the connection is over.
pub fn run_edge(params: &BootParams) -> ! {
    let cfg = decode_config(params);
    let req = match EdgeRequest::decode(params.args().get(cfg.encoded_len()..).unwrap_or(&[])) {
        Ok(r) => r,
        Err(e) => {
            log!("edge: unusable request: {e:?}");
            io::exit(ports::EXIT_BAD_BOOT);
        }
    };
    let (mut node, mut con) = build(params, &cfg);
    // A request VM probes its own links (a dead first relay is noticed
    // here) but takes no part in flooding.
    node.floods = false;
    node.control_flow = req.flow;
    let mut stream = Stream::connect(&req.target);
    fit_stream(&mut stream, node.protocol);
    node.edge = Some(EdgeStream {
        flow: req.flow,
        dst: req.dst,
        stream,
        replied: false,
        app_closed: false,
        pending: Vec::new(),
        backlog: Vec::new(),
        closing_since: None,
        avoid: req.avoid.clone(),
    });
    if node.protocol == Protocol::Onion {
        // No circuit, no stream: the app gets its refusal at once.
        if let Err(e) = node.onion_prepare(req.dst) {
            log!("edge: no onion circuit to node {}: {e:?}", req.dst);
            if let Some(e) = node.edge.as_mut() {
                e.stream.refuse();
            }
        }
    }
    io::ready();
    let mut frames: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut pacer = Pacer::new();
    loop {
        let mut worked = node.poll_links(&mut frames);
        let now = clock::now_us();
        // The circuit is checked against the topology at maintenance pace
        // (every few ms), not on every pass of this loop.
        let maintained = node.maintain(now);
        if maintained && node.protocol == Protocol::Onion && !node.onion_check(req.dst, now) {
            if let Some(e) = node.edge.as_mut() {
                e.stream.refuse();
            }
        }
        let (protocol, hop_limit, me) = (node.protocol, node.hop_limit, node.me);
        let mut segments: Vec<Vec<u8>> = Vec::new();
        let Some(e) = node.edge.as_mut() else { io::exit(0) };
        let state = e.stream.state();
        // The SOCKS answer, once the stream is up or refused.
        if !e.replied && matches!(state, StreamState::Established | StreamState::Reset | StreamState::Closed) {
            let reply = if state == StreamState::Reset { &SOCKS_REFUSED } else { &SOCKS_OK };
            if con.send(reply) == reply.len() {
                e.replied = true;
                worked = true;
            }
        }
        // App to stream.
        if e.replied && state == StreamState::Established {
            while e.pending.len() < 64 * 1024 && !e.app_closed {
                let got = con.receive_one(|ev| match ev {
                    ConsoleEvent::Data(d) => e.pending.extend_from_slice(d),
                    ConsoleEvent::Closed => e.app_closed = true,
                });
                if !got {
                    break;
                }
                worked = true;
            }
            if !e.pending.is_empty() {
                let n = e.stream.write(&e.pending);
                e.pending.drain(..n);
                worked |= n > 0;
            }
        }
        // Stream to app.
        if e.replied {
            let mut data = Vec::new();
            if e.stream.read(&mut data, 64 * 1024) > 0 {
                e.backlog.extend_from_slice(&data);
            }
            if !e.backlog.is_empty() {
                let n = con.send(&e.backlog);
                e.backlog.drain(..n);
                worked |= n > 0;
            }
        }
        // Either side done: close ours (the app sees its end when the VM
        // exits and the VMM closes the connection).
        let service_done = e.stream.peer_finished() && e.backlog.is_empty();
        if (e.app_closed && e.pending.is_empty()) || service_done {
            e.stream.close();
            e.closing_since.get_or_insert(now);
        }
        let mut seg = Vec::new();
        while e.stream.poll_transmit(now, &mut seg) {
            segments.push(core::mem::take(&mut seg));
        }
        let (flow, dst) = (e.flow, e.dst);
        let finished = match e.stream.state() {
            StreamState::Closed => true,
            StreamState::Reset => e.replied,
            _ => e.closing_since.is_some_and(|t| now.saturating_sub(t) > GOODBYE_US),
        };
        for seg in segments {
            worked = true;
            let repr = OverlayRepr {
                protocol,
                flags: FLAG_STREAM,
                hop_limit,
                flow_id: flow,
                src: me,
                dst,
                state_len: 0,
                payload_len: seg.len() as u16,
                link_id: 0,
                link_seq: 0,
            };
            let sent = if protocol == Protocol::Onion {
                node.onion_send_forward(dst, &seg)
            } else {
                node.send_from_here(repr, &seg)
            };
            if let Err(err) = sent {
                node.stats.drops.count(err);
            }
        }
        worked |= node.flush_links();
        con.flush();
        if finished && con.tx_drained() && node.ports.iter().all(|p| p.queue.is_empty()) {
            node.publish_stats();
            io::exit(0);
        }
        if worked {
            node.publish_stats();
        }
        pacer.tick(worked);
    }
}
