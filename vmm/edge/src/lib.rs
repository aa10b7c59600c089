//! The edge host: detecting an application's connection requests (claim
//! step (a)) and identifying the application behind each.
//!
//! - [`socks`]: the SOCKS5 front door (RFC 1928 CONNECT, RFC 1929
//!   username/password, whose username may carry criteria; Tor's RESOLVE
//!   and RESOLVE_PTR);
//! - [`peer`]: which process is on the other end of a loopback connection;
//! - [`ports`]: a request VM's taps, steered onto the links ahead of it;
//! - [`request`]: the VM spawned for one request;
//! - [`serve`]: claim steps (a)-(d) for each client, as one library call;
//! - [`exit`]: which node a destination goes to (a host, or an exit);
//! - [`members`]: hosts that joined, learnt from the link state floods;
//! - [`socks_client`]: the blocking SOCKS5 client of the relay and benches;
//! - [`transparent`]: `pathvm run`'s sandbox, relay and DNS.

pub mod exit;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod members;
pub mod peer;
pub mod ports;
pub mod request;
pub mod serve;
pub mod socks;
pub mod socks_client;
pub mod transparent;
