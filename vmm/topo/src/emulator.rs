//! A link emulator for test topologies: delay and loss without netem.
//!
//! A link with `delay_ms` or `loss_percent` in the topology file does not
//! join its hosts directly: each host's veth ends in a small "wire"
//! namespace, where this emulator moves frames between the two ends with
//! AF_PACKET sockets, holding each frame for the link's delay and dropping
//! a random share. Its settings come from a control file it rereads, so
//! `pathvm topo set` changes a running link (PLATFORM.md: this kernel has
//! no netem; fault injection is built from what is there).

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use netdev::packet_socket::RawSocket;

/// The emulated properties of a link, as the control file holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkShape {
    /// One-way delay in milliseconds.
    pub delay_ms: u32,
    /// Random loss in percent.
    pub loss_percent: u32,
}

impl LinkShape {
    /// Parses `delay_ms = N` and `loss_percent = P` lines.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut s = Self::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (k, v) = line.split_once('=').ok_or_else(|| format!("{line:?} is not key = value"))?;
            let v: u32 = v.trim().parse().map_err(|_| format!("{line:?}: not a number"))?;
            match k.trim() {
                "delay_ms" => s.delay_ms = v,
                "loss_percent" if v <= 100 => s.loss_percent = v,
                other => return Err(format!("unknown or out-of-range setting {other:?}")),
            }
        }
        Ok(s)
    }

    /// The control-file form.
    pub fn render(&self) -> String {
        format!("delay_ms = {}\nloss_percent = {}\n", self.delay_ms, self.loss_percent)
    }
}

/// The settings both directions read, updated from the control file.
struct Shared {
    delay_us: AtomicU64,
    loss_percent: AtomicU32,
}

fn forward(from: &RawSocket, to: &RawSocket, shared: &Shared, seed: u64) -> io::Result<()> {
    let mut held: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    let mut rng = seed | 1;
    loop {
        let timeout = held
            .front()
            .map_or(100, |(due, _)| due.saturating_duration_since(Instant::now()).as_millis().min(100) as i32);
        if let Some(n) = from.recv_incoming(&mut buf, timeout)? {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let loss = shared.loss_percent.load(Ordering::Relaxed) as u64;
            if rng % 100 >= loss {
                let due = Instant::now() + Duration::from_micros(shared.delay_us.load(Ordering::Relaxed));
                held.push_back((due, buf[..n].to_vec()));
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, f)) = held.pop_front() {
                // A full transmit queue drops the frame, as a wire would.
                let _ = to.send(&f);
            }
        }
    }
}

fn load(control: &Path, shared: &Shared) {
    if let Ok(s) = std::fs::read_to_string(control).map_err(|e| e.to_string()).and_then(|t| LinkShape::parse(&t)) {
        shared.delay_us.store(s.delay_ms as u64 * 1000, Ordering::Relaxed);
        shared.loss_percent.store(s.loss_percent, Ordering::Relaxed);
    }
}

/// Bridges interfaces `a` and `b` of the calling namespace until killed,
/// shaped by `control`. Writes `control` + `.ready` once both sockets are
/// bound.
pub fn run(a: &str, b: &str, control: &Path) -> io::Result<()> {
    let (sa, sb) = (Arc::new(RawSocket::open(a)?), Arc::new(RawSocket::open(b)?));
    let shared = Arc::new(Shared { delay_us: AtomicU64::new(0), loss_percent: AtomicU32::new(0) });
    load(control, &shared);
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64);
    let threads: Vec<_> = [(sa.clone(), sb.clone(), 1u64), (sb, sa, 2u64)]
        .into_iter()
        .map(|(from, to, k)| {
            let shared = shared.clone();
            std::thread::spawn(move || forward(&from, &to, &shared, seed.wrapping_mul(k)))
        })
        .collect();
    std::fs::write(ready_path(control), b"ready\n")?;
    let mut seen = None;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if threads.iter().any(|t| t.is_finished()) {
            return Err(io::Error::other("a direction of the link emulator stopped"));
        }
        let m = std::fs::metadata(control).and_then(|m| m.modified()).ok();
        if m != seen {
            seen = m;
            load(control, &shared);
        }
    }
}

/// The file the emulator writes when it is forwarding.
pub fn ready_path(control: &Path) -> PathBuf {
    let mut p = control.as_os_str().to_owned();
    p.push(".ready");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_render_and_refuse_nonsense() {
        let s = LinkShape { delay_ms: 100, loss_percent: 5 };
        assert_eq!(LinkShape::parse(&s.render()), Ok(s));
        assert_eq!(LinkShape::parse("# nothing\n"), Ok(LinkShape::default()));
        assert!(LinkShape::parse("delay_ms = soon").is_err());
        assert!(LinkShape::parse("loss_percent = 101").is_err());
        assert!(LinkShape::parse("jitter = 3").is_err());
    }
}
