//! The host side of the console.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// How input is read without ever blocking the device thread.
enum Input {
    /// A socket: `recv(MSG_DONTWAIT)`, leaving the socket blocking for output.
    Socket(UnixStream),
    /// A pipe or terminal switched to O_NONBLOCK; the flags it had before
    /// are restored on drop (the file description is shared with whoever
    /// started pathvm, e.g. an interactive shell).
    NonBlocking(File, libc::c_int),
    /// A regular file: never blocks, and epoll cannot watch it.
    RegularFile(File),
    /// Nothing to read, ever.
    Nothing,
}

/// Where console bytes go.
enum Output {
    /// The input's own socket, written with `send(MSG_DONTWAIT)`: an app
    /// that stops reading fills its socket and its VM waits, the device
    /// thread does not (nor does anything else it serves).
    Socket,
    /// The process's stdout (`pathvm boot`): blocking, as a terminal or a
    /// pipe that a person reads sets the pace; its file description is
    /// shared with whoever started pathvm, so it is not switched.
    Blocking(Box<dyn Write + Send>),
    /// Discarded.
    Discard,
}

/// Where console bytes come from and go to.
pub struct ConsoleBackend {
    input: Input,
    output: Output,
}

fn dup(fd: RawFd) -> io::Result<File> {
    // SAFETY: dup on a descriptor the process owns; the result is checked
    // and then owned by the File.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor nothing else owns.
    Ok(unsafe { File::from_raw_fd(new) })
}

/// Sets O_NONBLOCK; returns the flags before.
fn set_nonblocking(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL/F_SETFL on an owned descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags)
}

impl ConsoleBackend {
    /// The process's stdin and stdout.
    pub fn stdio() -> io::Result<Self> {
        let stdin = dup(libc::STDIN_FILENO)?;
        let input = if stdin.metadata()?.file_type().is_file() {
            Input::RegularFile(stdin)
        } else if stdin.metadata()?.file_type().is_socket() {
            Input::Socket(UnixStream::from(std::os::fd::OwnedFd::from(stdin)))
        } else {
            let flags = set_nonblocking(stdin.as_raw_fd())?;
            Input::NonBlocking(stdin, flags)
        };
        Ok(Self { input, output: Output::Blocking(Box::new(dup(libc::STDOUT_FILENO)?)) })
    }

    /// Connects to a Unix stream socket listening at `path`.
    pub fn unix(path: &Path) -> io::Result<Self> {
        Self::stream(UnixStream::connect(path)?)
    }

    /// Both directions over an already connected stream (one fd: at a
    /// thousand VMs every fd counts).
    pub fn stream(s: UnixStream) -> io::Result<Self> {
        Ok(Self { input: Input::Socket(s), output: Output::Socket })
    }

    /// No input; output discarded.
    pub fn sink() -> Self {
        Self { input: Input::Nothing, output: Output::Discard }
    }

    /// Whether a write can find the host side full ([`ConsoleBackend::write`]
    /// says `WouldBlock`); readiness then comes on the input's fd.
    pub(super) fn output_can_block(&self) -> bool {
        matches!(self.output, Output::Socket)
    }

    /// The fd to watch for input, if epoll can watch it.
    pub(super) fn pollable_input(&self) -> Option<RawFd> {
        match &self.input {
            Input::Socket(s) => Some(s.as_raw_fd()),
            Input::NonBlocking(f, _) => Some(f.as_raw_fd()),
            Input::RegularFile(_) | Input::Nothing => None,
        }
    }

    /// Whether input must be read without waiting for readiness.
    pub(super) fn input_always_ready(&self) -> bool {
        matches!(self.input, Input::RegularFile(_))
    }

    /// Reads what is available: `Ok(0)` is end of input, `WouldBlock`
    /// means nothing now.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.input {
            // SAFETY: recv into buf, at most buf.len() bytes.
            Input::Socket(s) => unsafe {
                libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            },
            Input::NonBlocking(f, _) | Input::RegularFile(f) => {
                // SAFETY: read into buf, at most buf.len() bytes.
                unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
            }
            Input::Nothing => return Err(io::ErrorKind::WouldBlock.into()),
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes what the host side takes now of `data`: the bytes written,
    /// or `WouldBlock` when it is full (only for a socket).
    pub(super) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match (&mut self.output, &self.input) {
            (Output::Socket, Input::Socket(s)) => {
                // SAFETY: send from `data`, at most data.len() bytes; no
                // SIGPIPE if the app has gone (EPIPE instead).
                let n = unsafe {
                    libc::send(s.as_raw_fd(), data.as_ptr().cast(), data.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(n as usize)
            }
            (Output::Socket, _) => Err(io::ErrorKind::NotConnected.into()),
            (Output::Blocking(w), _) => {
                w.write_all(data)?;
                w.flush()?;
                Ok(data.len())
            }
            (Output::Discard, _) => Ok(data.len()),
        }
    }
}

impl Drop for ConsoleBackend {
    fn drop(&mut self) {
        if let Input::NonBlocking(f, flags) = &self.input {
            // SAFETY: F_SETFL on a descriptor we own, back to its old flags.
            unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, *flags) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn socket_backend_reads_without_blocking_and_sees_eof() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut be = ConsoleBackend::stream(a).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(be.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        b.write_all(b"hi").unwrap();
        assert_eq!(be.read(&mut buf).unwrap(), 2);
        assert_eq!(be.write(b"yo").unwrap(), 2);
        let mut yo = [0u8; 2];
        b.read_exact(&mut yo).unwrap();
        assert_eq!(&yo, b"yo");
        drop(b);
        assert_eq!(be.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn nonblocking_input_gets_its_old_flags_back_on_drop() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors from pipe2.
        let (r, _w) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        let shared = dup(r.as_raw_fd()).unwrap();
        let old = set_nonblocking(shared.as_raw_fd()).unwrap();
        // SAFETY: F_GETFL on an owned descriptor.
        let flags_of = |f: &File| unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(flags_of(&r) & libc::O_NONBLOCK, 0, "dup shares the file description");
        drop(ConsoleBackend { input: Input::NonBlocking(shared, old), output: Output::Discard });
        assert_eq!(flags_of(&r) & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn sink_never_has_input() {
        let mut be = ConsoleBackend::sink();
        assert!(be.pollable_input().is_none());
        assert_eq!(be.read(&mut [0u8; 4]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(be.write(b"dropped").unwrap(), 7);
    }

    #[test]
    fn a_socket_nobody_reads_fills_and_says_so_without_blocking() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut be = ConsoleBackend::stream(a).unwrap();
        let chunk = [7u8; 64 << 10];
        let mut sent = 0;
        let full = loop {
            match be.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
            assert!(sent < 64 << 20, "a socket nobody reads took {sent} bytes");
        };
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
        let mut got = vec![0u8; sent];
        b.read_exact(&mut got).unwrap();
        assert!(be.write(&chunk[..1024]).unwrap() > 0, "room again once the reader reads");
        drop(b);
        let mut gone = be.write(&chunk);
        while gone.is_ok() {
            gone = be.write(&chunk);
        }
        assert_eq!(gone.unwrap_err().raw_os_error(), Some(libc::EPIPE), "no SIGPIPE, an error");
    }
}
