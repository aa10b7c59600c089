//! Link-local control: probing this node's links, flooding what it
//! measures, taking in what others advertise, and the topology routing
//! runs on as a result.

use alloc::vec::Vec;

use crate::routing::linkstate::{significant_change, LinkReport, LinkStatus, Lsa, LSA_MIN_INTERVAL_US, LSA_REFRESH_US};
use crate::routing::{NodeId, Routes};
use crate::wire::control::Control;
use crate::wire::{OverlayRepr, Protocol, FLAG_CONTROL};

use super::auth::SenderKind;
use super::drop::DropReason;
use super::{origin_repr, LinkPort, Notice, Router};

/// How often a request VM asks its neighbours for the link state while
/// it wants it ([`LINK_STATE_AFTER_TRAFFIC_US`](super::request::LINK_STATE_AFTER_TRAFFIC_US)).
pub const LSA_REQUEST_US: u64 = 500_000;

/// How often a request VM asks at most while its stream waits for the
/// keys link state brings: a relay that booted moments ago may not hold
/// the destination's advertisement yet, and the app is waiting. The first
/// asks come sooner ([`key_pull_after_us`]).
pub const KEY_PULL_US: u64 = 50_000;

/// When a request VM waiting for keys asks again after its `asked`-th
/// request: a maintenance pass after the first, doubling up to
/// [`KEY_PULL_US`]. The relay that had no route a moment ago usually has
/// one within milliseconds (it was still hearing its own neighbours), and
/// every ask costs the relay one answer.
pub fn key_pull_after_us(asked: u64) -> u64 {
    let doublings = asked.saturating_sub(1).min(8) as u32;
    (MAINTENANCE_US << doublings).min(KEY_PULL_US)
}

/// How often a node runs its link maintenance ([`Router::maintain`]).
pub const MAINTENANCE_US: u64 = 5_000;

/// How often idle onion circuits are aged out.
const EXPIRY_US: u64 = 1_000_000;

impl<L: LinkPort> Router<L> {
    /// Sends a control message to the neighbour on port `j`.
    fn send_control(&mut self, j: usize, flow_id: u32, dst: NodeId, msg: &Control) {
        let mut payload = Vec::with_capacity(32);
        msg.encode(&mut payload);
        let repr = origin_repr(Protocol::Shortest, FLAG_CONTROL, 1, flow_id, self.me, dst, payload.len());
        // Probes and acks jump the queue; floods wait their turn.
        let urgent = matches!(msg, Control::Probe { .. } | Control::ProbeAck { .. });
        self.enqueue(j, repr, &[], &payload, urgent);
    }

    /// A control message from the neighbour on port `i`.
    ///
    /// A request VM (`sender` [`SenderKind::Request`]) may only ask:
    /// probe its link and pull the link state. What would change this
    /// node's view (acks, advertisements) comes from nodes alone.
    pub(super) fn control(
        &mut self,
        i: usize,
        sender: SenderKind,
        repr: &OverlayRepr,
        payload: &[u8],
        now: u64,
    ) -> Result<(), DropReason> {
        let msg = Control::decode(payload).map_err(|_| DropReason::BadControl)?;
        if sender == SenderKind::Request && !matches!(msg, Control::Probe { .. } | Control::LsaRequest) {
            return Err(DropReason::RequestControl);
        }
        match msg {
            // Echo under the probe's flow id, so an edge host steers the
            // ack to the request VM that probed.
            Control::Probe { seq, sent_us } => {
                self.send_control(i, repr.flow_id, repr.src, &Control::ProbeAck { seq, sent_us })
            }
            Control::ProbeAck { seq, sent_us } => {
                if repr.flow_id == self.control_flow {
                    self.ports[i].monitor.on_ack(now, seq, sent_us);
                    self.stats.probe_acks += 1;
                }
            }
            // Hellos go unsealed, under the reserved id ([`super::hello`]).
            Control::Hello(_) => return Err(DropReason::BadControl),
            Control::LsaRequest => {
                let mut all: Vec<Lsa> = self.lsdb.lsas().cloned().collect();
                all.extend(self.own_lsa.clone());
                for lsa in all {
                    self.send_control(i, repr.flow_id, repr.src, &Control::LinkState(lsa));
                }
            }
            Control::LinkState(lsa) => {
                let wall = self.clock.at(now);
                let offered = self.lsdb.offer(self.me, now, wall, lsa.clone(), &mut self.ports[i].lsa_budget);
                self.stats.members_learned = self.lsdb.keys().learned() as u64;
                if offered? {
                    self.stats.lsas_accepted += 1;
                    if self.floods {
                        self.flood(&lsa, Some(i));
                    }
                    self.refresh_topology(now);
                }
            }
        }
        Ok(())
    }

    /// Sends `lsa` to every neighbour but the one on port `except`.
    fn flood(&mut self, lsa: &Lsa, except: Option<usize>) {
        let msg = Control::LinkState(lsa.clone());
        for j in 0..self.ports.len() {
            if Some(j) != except {
                let peer = self.ports[j].peer;
                self.send_control(j, 0, peer, &msg);
            }
        }
    }

    /// This node's links as measured now.
    fn own_reports(&self, now: u64) -> Vec<LinkReport> {
        self.ports.iter().map(|p| p.monitor.report(now)).collect()
    }

    /// Recomputes the topology routing runs on; on a change, the routers
    /// and the source paths follow.
    pub(super) fn refresh_topology(&mut self, now: u64) {
        // A flooding node routes on what it advertised, as every other node
        // does, so hop-by-hop choices agree; a request VM on what it sees.
        let own = if self.floods { self.advertised.clone() } else { self.own_reports(now) };
        let topology = self.lsdb.effective(self.me, &own);
        if topology == self.topology {
            return;
        }
        let (before, after) = (self.topology.links().len(), topology.links().len());
        if before != after {
            self.notice(Notice::LinksUsable { now: after, before });
        }
        self.routes = Routes::compute(&topology, self.me);
        self.stats.publish_topology(&topology);
        self.topology = topology;
        self.stats.topology_changes += 1;
    }

    /// Probes links, notices dead neighbours, advertises what changed and
    /// ages out what others advertised. Runs every few milliseconds;
    /// returns whether it ran this time.
    pub fn maintain(&mut self, now: u64) -> bool {
        if now < self.next_maintenance {
            return false;
        }
        self.next_maintenance = now + MAINTENANCE_US;
        // A request VM probes nothing: its neighbours measure its links'
        // far ends and report them in the link state it pulls.
        let probed = if self.floods { self.ports.len() } else { 0 };
        if self.floods {
            self.send_hellos(now);
        }
        for j in 0..probed {
            if let Some((seq, sent_us)) = self.ports[j].monitor.poll_probe(now) {
                let (flow, peer) = (self.control_flow, self.ports[j].peer);
                self.send_control(j, flow, peer, &Control::Probe { seq, sent_us });
                self.stats.probes_sent += 1;
            }
            if self.ports[j].monitor.tick(now) {
                let peer = self.ports[j].peer;
                self.notice(Notice::LinkDown { peer });
            }
        }
        // A request VM keeps what it pulled last (it pulls only while its
        // stream moves): ageing it out while idle would route on the bare
        // configuration and, for onion, declare every relay gone.
        let expired = self.floods && self.lsdb.expire(now);
        if now >= self.next_expiry {
            self.next_expiry = now + EXPIRY_US;
            self.onion.expire(now);
        }
        if self.floods {
            let own = self.own_reports(now);
            for (slot, r) in self.stats.links.iter_mut().zip(&own) {
                *slot = crate::node::LinkStats {
                    peer: u64::from(r.peer),
                    status: match r.status {
                        LinkStatus::Unknown => 0,
                        LinkStatus::Up => 1,
                        LinkStatus::Down => 2,
                    },
                    latency_us: u64::from(r.latency_us),
                    loss_permille: u64::from(r.loss_permille),
                };
            }
            let since = self.advertised_at.map_or(u64::MAX, |t| now.saturating_sub(t));
            let changed = since >= LSA_MIN_INTERVAL_US && significant_change(&self.advertised, &own);
            // A new onion key goes out at once: sources build to it while
            // the key before still opens what is under way.
            let rotated = self.onion.rotate(now);
            if changed || rotated || since >= LSA_REFRESH_US {
                // A node without a signing key routes on what it measures
                // and advertises nothing (no one would accept it).
                if let Some(signer) = &self.signer {
                    // Numbered by the wall clock (so a restart numbers past
                    // what it sent before), never twice the same.
                    let last = self.own_lsa.as_ref().map_or(0, |l| l.seq);
                    let seq = self.clock.at(now).max(last + LSA_MIN_INTERVAL_US);
                    let onion_key = self.onion.public();
                    let cert = self.identity.as_ref().map_or_else(Vec::new, |id| id.cert.clone());
                    let mut lsa = Lsa { origin: self.me, seq, onion_key, links: own.clone(), sig: [0; 64], cert };
                    signer.sign(&mut lsa);
                    self.flood(&lsa, None);
                    self.own_lsa = Some(lsa);
                }
                self.advertised = own;
                self.advertised_at = Some(now);
                self.refresh_topology(now);
                return true;
            }
        }
        let wants = self.request.as_ref().is_some_and(|r| r.wants_link_state(now));
        if !self.floods && wants && now >= self.next_lsa_request {
            // A request VM hears no floods: it asks its neighbours.
            let waiting = self.request.as_ref().is_some_and(|r| r.waits_for_keys());
            let mut asked = 0;
            if let Some(r) = self.request.as_mut() {
                r.note_lsa_request(now);
                self.stats.connect = r.times;
                asked = r.times.lsa_requests;
            }
            self.next_lsa_request = now + if waiting { key_pull_after_us(asked) } else { LSA_REQUEST_US };
            for j in 0..self.ports.len() {
                let (flow, peer) = (self.control_flow, self.ports[j].peer);
                self.send_control(j, flow, peer, &Control::LsaRequest);
            }
        }
        if expired || !self.floods {
            self.refresh_topology(now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_waiting_for_keys_asks_again_soon_then_less_often() {
        let after: Vec<u64> = (1..=6).map(key_pull_after_us).collect();
        assert_eq!(after, [5_000, 10_000, 20_000, 40_000, 50_000, 50_000]);
        assert_eq!(key_pull_after_us(0), MAINTENANCE_US, "before any ask");
        assert_eq!(key_pull_after_us(u64::MAX), KEY_PULL_US, "never beyond the cap");
    }
}
