//! Host-side network devices for pathvm.
//!
//! - [`tap`]: a Linux tap device with a virtio-net header, the backend of a
//!   VM's virtio-net on an edge host;
//! - [`chain`]: moving bytes between virtio descriptor chains and host
//!   buffers, with every guest-supplied address and length checked. It is
//!   the one data-plane primitive shared by the in-VMM devices and (next)
//!   the vhost-user-net backend on relay hosts;
//! - [`queue_pair`]: one virtio-net receive/transmit pass against a tap,
//!   the data plane both of those run;
//! - [`vhost_user`]: the vhost-user-net backend relay nodes serve their
//!   VMs' ports from.
//!
//! - [`packet_socket`]: AF_PACKET sockets for test traffic and link
//!   emulation;
//! - [`netns`]: running code inside a test host's network namespace;
//! - [`ethtool`]: switching offloads off on interfaces a program carries
//!   frames between;
//! - [`netlink`]: links, ingress qdiscs and tc redirect filters over
//!   rtnetlink, so the request path and the node spawn no `tc` or `ip`.
//!
//! Nothing here knows about the VMM.

pub mod chain;
pub mod ethtool;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod packet_socket;
pub mod queue_pair;
pub mod tap;
pub mod vhost_user;

pub use chain::ChainError;
pub use metrics::{NetMetrics, NetMetricsSnapshot};
pub use queue_pair::{drain_queue, RxFrame};
pub use tap::{Tap, TapError};
