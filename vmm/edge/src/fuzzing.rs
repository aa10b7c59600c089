//! The bodies of the edge's fuzz targets (`fuzz/`): what the edge reads
//! from apps it does not trust.

use crate::transparent::dns::Resolver;

/// A target's body.
pub type Body = fn(&[u8]);

/// The targets by name, as `fuzz/` and the regression replay know them.
pub const TARGETS: [(&str, Body); 1] = [("dns", dns)];

/// DNS datagrams from an app under `pathvm run`, one after another
/// through one resolver (split at `|||`): none panics; every response
/// keeps the query's id, is marked a response and never outgrows a
/// datagram; an answered name leads back to itself.
pub fn dns(data: &[u8]) {
    let mut r = Resolver::default();
    for q in data.split(|b| *b == b'|').filter(|q| !q.is_empty()).take(16) {
        let Ok((resp, what)) = r.answer(q) else { continue };
        assert_eq!(&resp[..2], &q[..2], "the id is kept");
        assert!(resp[2] & 0x80 != 0 && resp.len() <= 12 + q.len() + 16 + 256, "a bounded response");
        if let (Some(name), Some(answer), 1 | 28) = (&what.name, &what.answer, what.qtype) {
            let ip: std::net::IpAddr = answer.parse().expect("an A or AAAA answer is an address");
            assert_eq!(r.name_of(ip), Some(name.as_str()), "a virtual address leads back to its name");
        }
    }
}

#[cfg(test)]
#[path = "../../../fuzz/replay.rs"]
mod replay;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_committed_fuzz_input_runs_clean() {
        super::replay::committed_inputs_run_clean(&TARGETS);
    }
}
