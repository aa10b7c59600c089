//! Packet capture on a test host's interface (AF_PACKET, both directions),
//! to check what an observer of a link would see.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use netdev::packet_socket::RawSocket;

/// Frames most one capture keeps (bounded memory).
const MAX_FRAMES: usize = 200_000;

/// Receive queue of a capture socket.
const RECV_BUFFER: usize = 64 << 20;

/// A running capture; [`Capture::stop`] returns what it saw.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Vec<u8>>>,
}

impl Capture {
    /// Starts capturing every frame crossing `iface` in namespace `ns`.
    pub fn start(ns: &str, iface: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, iface, flag) = (ns.to_string(), iface.to_string(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            crate::in_netns(&ns, move || {
                let s = RawSocket::open(&iface).unwrap_or_else(|e| panic!("capture on {iface}: {e}"));
                // The default queue holds ~100 frames: a capture thread that
                // loses the core for a few ms on a loaded 2-core CI box
                // would miss part of the link.
                s.set_recv_buffer(RECV_BUFFER).unwrap_or_else(|e| panic!("capture buffer on {iface}: {e}"));
                let _ = ready_tx.send(());
                let mut frames = Vec::new();
                let mut buf = vec![0u8; 65536];
                while !flag.load(Ordering::Relaxed) {
                    if let Ok(Some((n, _))) = s.recv_any(&mut buf, 50) {
                        if frames.len() < MAX_FRAMES {
                            frames.push(buf[..n].to_vec());
                        }
                    }
                }
                // Drain what is still queued.
                while let Ok(Some((n, _))) = s.recv_any(&mut buf, 0) {
                    if frames.len() < MAX_FRAMES {
                        frames.push(buf[..n].to_vec());
                    }
                }
                frames
            })
        });
        ready_rx.recv_timeout(std::time::Duration::from_secs(5)).expect("capture started");
        Self { stop, thread }
    }

    /// Stops and returns the frames.
    pub fn stop(self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("capture thread")
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
