//! The host side of a node VM's console: datagram records in and out, and
//! the real services that streams ending at this node connect to.
//!
//! The VM's console is one end of a socket pair; this module owns the
//! other. Records the host's user writes (datagrams to originate) go into
//! the VM; datagrams the VM delivers go out to the user. A stream that
//! reaches this node asks (`OPEN host:port`) to be connected; a thread
//! connects to the service and answers `OPENED` or `REFUSED`, then moves
//! the stream's bytes between the service and the VM. Every write into the
//! VM is one whole record under one lock, so the writers never interleave.
//!
//! What waits for a slow service is bounded: the VM hands a stream at most
//! [`HOST_WINDOW`] bytes beyond what this side has written to the service
//! and granted back (`CREDIT` records), so the one thread reading the VM
//! never blocks on one service and holds up the others. A stream the VM
//! resets (its source went silent, or refused it) has its service
//! connection shut down, which ends both of its threads.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use guest_agent::node::{stream_op, Record, HOST_WINDOW, RECORD_CONTROL, RECORD_STREAM};
use guest_agent::transport::stream::reset_reason;

use crate::allow::AllowPolicy;
use crate::events::{flow_name, micros, Event, EventSink};
use crate::lookup::Query;

/// How long a service gets to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest data record sent into the VM (larger reads measured no faster).
const CHUNK: usize = 16 * 1024;
const _: () = assert!(CHUNK <= Record::MAX_PAYLOAD);

enum ToService {
    Data(Vec<u8>),
    Eof,
}

/// Delivered datagrams queued for the user's output at most; beyond, they
/// are dropped (a user who stopped reading loses datagrams, and streams,
/// which share the VM's console, are never held up by it).
const OUTPUT_QUEUE: usize = 1024;

/// Bytes written to a service before they are granted back to the VM
/// (sooner when nothing more is queued).
const CREDIT_BATCH: u32 = HOST_WINDOW / 16;

/// A connected stream: its queue to the service writer, and the service
/// connection (to shut it down when the VM resets the stream).
struct FlowHandle {
    tx: Sender<ToService>,
    service: TcpStream,
}

type Flows = Arc<Mutex<HashMap<u32, FlowHandle>>>;

/// Writes whole records into the VM.
#[derive(Clone)]
struct VmWriter(Arc<Mutex<UnixStream>>);

impl VmWriter {
    fn send(&self, node: u16, flow: u32, payload: &[u8]) -> io::Result<()> {
        let mut rec = Vec::with_capacity(payload.len() + 8);
        Record { node, flow, payload }.encode(&mut rec);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write_all(&rec)
    }

    fn control(&self, flow: u32, op: u8) -> io::Result<()> {
        self.send(RECORD_CONTROL, flow, &[op])
    }

    /// Grants the VM `n` more of stream `flow`'s bytes.
    fn credit(&self, flow: u32, n: u32) -> io::Result<()> {
        let mut rec = [0u8; 5];
        rec[0] = stream_op::CREDIT;
        rec[1..].copy_from_slice(&n.to_be_bytes());
        self.send(RECORD_CONTROL, flow, &rec)
    }
}

/// Starts the router on `host_end` of the VM's console: records from
/// `input` go into the VM, delivered datagrams go to `output`, streams are
/// connected to their targets within `allow`.
pub fn start(
    host_end: UnixStream,
    input: Box<dyn Read + Send>,
    output: Box<dyn Write + Send>,
    allow: AllowPolicy,
    events: Arc<EventSink>,
) -> io::Result<()> {
    let vm = VmWriter(Arc::new(Mutex::new(host_end.try_clone()?)));
    let flows: Flows = Arc::default();
    let pump_vm = vm.clone();
    let allow = Arc::new(Services { allow, events });
    thread::Builder::new().name("pathvm-node-in".into()).spawn(move || pump_input(input, &pump_vm))?;
    thread::Builder::new()
        .name("pathvm-node-out".into())
        .spawn(move || route_output(host_end, output, &vm, &flows, &allow))?;
    Ok(())
}

/// User records into the VM, one whole record at a time.
fn pump_input(mut input: Box<dyn Read + Send>, vm: &VmWriter) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        while let Some((r, len)) = Record::decode(&buf[used..]) {
            if vm.send(r.node, r.flow, r.payload).is_err() {
                return;
            }
            used += len;
        }
        buf.drain(..used);
    }
}

/// Records from the VM: datagrams to the user, stream records to services.
fn route_output(
    mut from_vm: UnixStream,
    mut output: Box<dyn Write + Send>,
    vm: &VmWriter,
    flows: &Flows,
    allow: &Arc<Services>,
) {
    let (out_tx, out_rx) = sync_channel::<Vec<u8>>(OUTPUT_QUEUE);
    let _ = thread::Builder::new().name("pathvm-node-dgram".into()).spawn(move || {
        for rec in out_rx {
            if output.write_all(&rec).and_then(|_| output.flush()).is_err() {
                return;
            }
        }
    });
    let mut dropped = 0u64;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match from_vm.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        while let Some((r, len)) = Record::decode(&buf[used..]) {
            used += len;
            match r.node {
                RECORD_STREAM => {
                    // Never blocks: the VM sends no more than the window.
                    if let Some(f) = flows.lock().unwrap_or_else(|p| p.into_inner()).get(&r.flow) {
                        let _ = f.tx.send(ToService::Data(r.payload.to_vec()));
                    }
                }
                RECORD_CONTROL => control(r.flow, r.payload, vm, flows, allow),
                _ => {
                    let mut rec = Vec::with_capacity(r.payload.len() + 8);
                    r.encode(&mut rec);
                    // The user may have stopped reading; deliveries then
                    // drop here, never holding up the streams behind them.
                    if let Err(TrySendError::Full(_)) = out_tx.try_send(rec) {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!("node: {dropped} delivered datagrams dropped: the output is not read");
                        }
                    }
                }
            }
        }
        buf.drain(..used);
    }
}

/// What opening a stream's service needs: where it may go, and where to
/// say how it went.
struct Services {
    allow: AllowPolicy,
    events: Arc<EventSink>,
}

fn control(flow: u32, payload: &[u8], vm: &VmWriter, flows: &Flows, allow: &Arc<Services>) {
    match payload.first().copied() {
        Some(stream_op::OPEN) => {
            let target = String::from_utf8_lossy(&payload[1..]).into_owned();
            let (vm, flows, allow) = (vm.clone(), flows.clone(), allow.clone());
            let _ = thread::Builder::new().name("pathvm-node-conn".into()).spawn(move || {
                match Query::from_open_info(&target) {
                    Some(q) => answer_lookup(flow, q, &vm, &allow),
                    None => open(flow, &target, &vm, &flows, &allow),
                }
            });
        }
        Some(stream_op::EOF) => {
            if let Some(f) = flows.lock().unwrap_or_else(|p| p.into_inner()).get(&flow) {
                let _ = f.tx.send(ToService::Eof);
            }
        }
        Some(stream_op::RESET) => {
            if let Some(f) = flows.lock().unwrap_or_else(|p| p.into_inner()).remove(&flow) {
                // Ends the reader (its read returns) and, with the queue
                // dropped, the writer.
                let _ = f.service.shutdown(Shutdown::Both);
            }
        }
        _ => tracing::debug!(flow, "node: unknown stream control record"),
    }
}

/// Connects the target the stream's opener named, trying only the
/// addresses `allow` permits: for an address, its allow list or exit
/// policy; for a name (resolved here, as an exit), the exit policy alone.
fn connect(target: &str, allow: &AllowPolicy) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{target}: no address"));
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let named = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_err();
    for addr in target.to_socket_addrs()? {
        let checked = if named { allow.check_named(&addr) } else { allow.check(&addr) };
        if let Err(why) = checked {
            last = io::Error::new(io::ErrorKind::PermissionDenied, why);
            continue;
        }
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Answers a lookup stream: the results as its bytes, then its end; only
/// an exit answers (a destination host is no resolver for others).
fn answer_lookup(flow: u32, q: Result<Query, String>, vm: &VmWriter, svc: &Services) {
    let started = Instant::now();
    let answer = match q {
        Ok(_) if !svc.allow.is_exit() => Err("this node is no exit: it answers no lookups".to_string()),
        Ok(q) => q.resolve(),
        Err(e) => Err(e),
    };
    svc.events.emit(&Event::Lookup {
        flow: flow_name(flow),
        lookup_us: micros(started.elapsed()),
        failed: answer.as_ref().err().cloned(),
    });
    let Ok(bytes) = answer else {
        let _ = vm.control(flow, stream_op::REFUSED);
        return;
    };
    let _ = vm
        .control(flow, stream_op::OPENED)
        .and_then(|_| vm.send(RECORD_STREAM, flow, &bytes))
        .and_then(|_| vm.control(flow, stream_op::EOF));
}

/// Connects stream `flow` to `target` and moves its bytes until done.
fn open(flow: u32, target: &str, vm: &VmWriter, flows: &Flows, svc: &Services) {
    let connecting = Instant::now();
    let connected = connect(target, &svc.allow);
    svc.events.emit(&Event::ServiceConnect {
        flow: flow_name(flow),
        connect_us: micros(connecting.elapsed()),
        refused: connected.as_ref().err().map(|e| e.to_string()),
    });
    let service = match connected {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(flow, target, "node: service refused: {e}");
            // A policy refusal says so: the app gets SOCKS reply 2, not 5.
            let reason = match e.kind() {
                io::ErrorKind::PermissionDenied => reset_reason::NOT_ALLOWED,
                _ => reset_reason::REFUSED,
            };
            let _ = vm.send(RECORD_CONTROL, flow, &[stream_op::REFUSED, reason]);
            return;
        }
    };
    let _ = service.set_nodelay(true);
    let (tx, rx) = channel();
    let (Ok(handle), Ok(writer)) = (service.try_clone(), service.try_clone()) else {
        let _ = vm.control(flow, stream_op::REFUSED);
        return;
    };
    flows.lock().unwrap_or_else(|p| p.into_inner()).insert(flow, FlowHandle { tx, service: handle });
    if vm.control(flow, stream_op::OPENED).is_err() {
        return;
    }
    // VM to service.
    let (vm_w, flows_w) = (vm.clone(), flows.clone());
    let _ = thread::Builder::new().name("pathvm-node-w".into()).spawn(move || {
        write_service(flow, writer, &rx, &vm_w);
        flows_w.lock().unwrap_or_else(|p| p.into_inner()).remove(&flow);
    });
    // Service to VM, on this thread.
    let mut reader = service;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => {
                let _ = vm.control(flow, stream_op::EOF);
                return;
            }
            Ok(n) => {
                if vm.send(RECORD_STREAM, flow, &buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => {
                let _ = vm.control(flow, stream_op::RESET);
                flows.lock().unwrap_or_else(|p| p.into_inner()).remove(&flow);
                return;
            }
        }
    }
}

/// Writes stream `flow`'s bytes to the service as they come, granting
/// them back to the VM as they are written.
fn write_service(flow: u32, mut writer: TcpStream, rx: &Receiver<ToService>, vm: &VmWriter) {
    let mut owed = 0u32;
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                // Caught up: grant what was written before waiting.
                if owed > 0 && vm.credit(flow, std::mem::take(&mut owed)).is_err() {
                    return;
                }
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => return,
        };
        match msg {
            ToService::Data(d) => {
                if writer.write_all(&d).is_err() {
                    return;
                }
                owed += d.len() as u32;
                if owed >= CREDIT_BATCH && vm.credit(flow, std::mem::take(&mut owed)).is_err() {
                    return;
                }
            }
            ToService::Eof => {
                let _ = writer.shutdown(Shutdown::Write);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_pass_through_and_streams_reach_a_service() {
        let (vm_end, host_end) = UnixStream::pair().unwrap();
        let (out_r, out_w) = UnixStream::pair().unwrap();
        start(host_end, Box::new(io::empty()), Box::new(out_w), loopback(), Arc::new(EventSink::disabled())).unwrap();
        let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = service.local_addr().unwrap().to_string();
        let mut vm = vm_end.try_clone().unwrap();

        // A delivered datagram goes to the user's output unchanged.
        let mut rec = Vec::new();
        Record { node: 1, flow: 7, payload: b"dgram" }.encode(&mut rec);
        vm.write_all(&rec).unwrap();
        let mut got = vec![0u8; rec.len()];
        (&out_r).read_exact(&mut got).unwrap();
        assert_eq!(got, rec);

        // A stream opens, sends, and hears back.
        let mut open = vec![stream_op::OPEN];
        open.extend_from_slice(target.as_bytes());
        rec.clear();
        Record { node: RECORD_CONTROL, flow: 9, payload: &open }.encode(&mut rec);
        vm.write_all(&rec).unwrap();
        let (mut conn, _) = service.accept().unwrap();
        let mut answer = [0u8; 9];
        vm.read_exact(&mut answer).unwrap();
        assert_eq!((answer[0..2] == [0xff, 0xff], answer[8]), (true, stream_op::OPENED));
        rec.clear();
        Record { node: RECORD_STREAM, flow: 9, payload: b"ping" }.encode(&mut rec);
        vm.write_all(&rec).unwrap();
        let mut four = [0u8; 4];
        conn.read_exact(&mut four).unwrap();
        assert_eq!(&four, b"ping");
        // What reached the service is granted back to the VM.
        let mut credit = [0u8; 13];
        vm.read_exact(&mut credit).unwrap();
        assert_eq!((&credit[0..2], credit[8]), (&[0xff, 0xff][..], stream_op::CREDIT));
        assert_eq!(u32::from_be_bytes(credit[9..13].try_into().unwrap()), 4);
        conn.write_all(b"pong").unwrap();
        let mut back = [0u8; 12];
        vm.read_exact(&mut back).unwrap();
        assert_eq!((&back[0..2], &back[8..]), (&[0xff, 0xfe][..], &b"pong"[..]));
        // A reset from the VM closes the service connection.
        rec.clear();
        Record { node: RECORD_CONTROL, flow: 9, payload: &[stream_op::RESET] }.encode(&mut rec);
        vm.write_all(&rec).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0, "the service saw its connection end");
    }

    fn loopback() -> AllowPolicy {
        AllowPolicy::from_config(&[], &[]).unwrap()
    }

    /// The answer to an OPEN of `target` by a connector allowing `allow`,
    /// and the `service_connect` event it wrote.
    fn answer_to_open(target: &str, allow: AllowPolicy) -> (u8, serde_json::Value) {
        let (vm_end, host_end) = UnixStream::pair().unwrap();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pathvm-connector-{}-{n}.jsonl", std::process::id()));
        let events = Arc::new(EventSink::open(&path).unwrap());
        start(host_end, Box::new(io::empty()), Box::new(io::sink()), allow, events).unwrap();
        let mut vm = vm_end;
        let mut open = vec![stream_op::OPEN];
        open.extend_from_slice(target.as_bytes());
        let mut rec = Vec::new();
        Record { node: RECORD_CONTROL, flow: 3, payload: &open }.encode(&mut rec);
        vm.write_all(&rec).unwrap();
        let mut answer = [0u8; 9];
        vm.read_exact(&mut answer).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        (answer[8], serde_json::from_str(text.lines().next().expect("a service_connect event")).unwrap())
    }

    #[test]
    fn a_target_outside_the_allow_list_is_refused_and_never_connected() {
        let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        service.set_nonblocking(true).unwrap();
        let target = service.local_addr().unwrap().to_string();
        let elsewhere = AllowPolicy::from_config(&["192.0.2.0/24:*".into()], &[]).unwrap();
        let (answer, event) = answer_to_open(&target, elsewhere);
        assert_eq!(answer, stream_op::REFUSED);
        assert_eq!(event["event"], "service_connect");
        assert!(event["refused"].as_str().is_some_and(|r| r.contains("allow list")), "{event}");
        assert!(service.accept().is_err(), "the service was connected");
        let port = service.local_addr().unwrap().port();
        let that_port = AllowPolicy::from_config(&[format!("127.0.0.1/32:{port}")], &[]).unwrap();
        let (answer, event) = answer_to_open(&target, that_port);
        assert_eq!(answer, stream_op::OPENED);
        assert!(event["refused"].is_null() && event["connect_us"].is_u64(), "{event}");
    }

    #[test]
    fn a_service_that_is_down_is_refused() {
        let (vm_end, host_end) = UnixStream::pair().unwrap();
        start(host_end, Box::new(io::empty()), Box::new(io::sink()), loopback(), Arc::new(EventSink::disabled()))
            .unwrap();
        let mut vm = vm_end;
        let mut open = vec![stream_op::OPEN];
        open.extend_from_slice(b"127.0.0.1:1");
        let mut rec = Vec::new();
        Record { node: RECORD_CONTROL, flow: 3, payload: &open }.encode(&mut rec);
        vm.write_all(&rec).unwrap();
        let mut answer = [0u8; 9];
        vm.read_exact(&mut answer).unwrap();
        assert_eq!(answer[8], stream_op::REFUSED);
    }
}
