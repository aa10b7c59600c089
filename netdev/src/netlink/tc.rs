//! tc through rtnetlink: the ingress qdisc, and `u32` filters on it whose
//! one action is `mirred egress redirect` to another interface.
//!
//! These are the messages `tc qdisc add dev D ingress` and `tc filter add
//! dev D parent ffff: prio P protocol all u32 match u32 V M at O action
//! mirred egress redirect dev T` send, and their deletions.

use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute, TcFilterU32Option,
    TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{Interface, Netlink, NetlinkError, CREATE};

/// The ingress qdisc's handle, `ffff:` (filters name it as their parent).
const INGRESS: TcHandle = TcHandle { major: 0xffff, minor: 0 };
/// `ETH_P_ALL`: filters see every protocol (`protocol all`).
const ETH_P_ALL: u16 = 0x0003;

/// One `u32` key: the 32-bit word `offset` bytes into the network header
/// (just after Ethernet, on ingress), masked with `mask`, equals `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct U32Match {
    /// The value, as the word reads in network byte order.
    pub value: u32,
    /// Which bits of the word count.
    pub mask: u32,
    /// Bytes from the start of the network header; a multiple of 4.
    pub offset: i32,
}

impl U32Match {
    /// Every frame (`match u32 0 0 at 0`: `u32` is the only classifier
    /// this kernel has, and it has no catch-all of its own).
    pub const ANY: Self = Self { value: 0, mask: 0, offset: 0 };
}

/// `tcm_info` of a filter: priority above, protocol (network order) below.
fn filter_info(prio: u16, protocol: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(protocol.to_be())
}

/// `tc qdisc add|del dev IFACE ingress`.
pub(crate) fn ingress_qdisc_message(iface: &Interface) -> TcMessage {
    let mut msg = TcMessage::with_index(iface.index() as i32);
    msg.header.parent = TcHandle::INGRESS;
    msg.header.handle = INGRESS;
    msg.attributes.push(TcAttribute::Kind("ingress".into()));
    msg
}

/// `tc filter add dev FROM parent ffff: prio PRIO protocol all u32 match
/// ... action mirred egress redirect dev TO`; priority 0 lets the kernel
/// choose one.
pub(crate) fn redirect_filter_message(from: &Interface, key: U32Match, prio: u16, to: &Interface) -> TcMessage {
    let mut msg = TcMessage::with_index(from.index() as i32);
    msg.header.parent = INGRESS;
    msg.header.info = filter_info(prio, ETH_P_ALL);
    msg.attributes.push(TcAttribute::Kind("u32".into()));

    let mut k = TcU32Key::default();
    k.val = key.value;
    k.mask = key.mask;
    k.off = key.offset;
    let mut sel = TcU32Selector::default();
    // A match with an action ends classification (tc sets this too).
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![k];

    let mut mirror = TcMirror::default();
    // Redirected frames leave this interface's pipeline (tc's default
    // for `redirect`).
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to.index();
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(mirror))]),
    ];

    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    msg
}

/// `tc filter del dev IFACE parent ffff: prio PRIO` (any protocol).
pub(crate) fn filter_del_message(iface: &Interface, prio: u16) -> TcMessage {
    let mut msg = TcMessage::with_index(iface.index() as i32);
    msg.header.parent = INGRESS;
    msg.header.info = filter_info(prio, 0);
    msg
}

impl Netlink {
    /// Adds the ingress qdisc to `iface`; one that exists already (another
    /// daemon's, an earlier run's) is fine.
    pub fn add_ingress_qdisc(&mut self, iface: &Interface) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc_message(iface));
        match self.request(msg, CREATE, "adding the ingress qdisc", iface.name()) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Deletes the ingress qdisc of `iface`, and every filter on it.
    pub fn del_ingress_qdisc(&mut self, iface: &Interface) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::DelQueueDiscipline(ingress_qdisc_message(iface));
        self.request(msg, 0, "deleting the ingress qdisc", iface.name())
    }

    /// Redirects frames arriving on `from` that match `key` out of `to`,
    /// with a filter of priority `prio` (0: the kernel picks) on `from`'s
    /// ingress qdisc, which must exist.
    pub fn add_redirect(
        &mut self,
        from: &Interface,
        key: U32Match,
        prio: u16,
        to: &Interface,
    ) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::NewTrafficFilter(redirect_filter_message(from, key, prio, to));
        self.request(msg, CREATE, "adding a u32 mirred redirect filter", from.name())
    }

    /// Deletes the ingress filters of priority `prio` on `iface`.
    pub fn del_filters(&mut self, iface: &Interface, prio: u16) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::DelTrafficFilter(filter_del_message(iface, prio));
        self.request(msg, 0, "deleting ingress filters", iface.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    fn iface(name: &str, index: u32) -> Interface {
        Interface::for_tests(name, index)
    }

    fn bytes(msg: &TcMessage) -> Vec<u8> {
        let mut b = vec![0; msg.buffer_len()];
        msg.emit(&mut b);
        b
    }

    /// Offset of `needle` in `hay`.
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn the_flow_filter_selector_matches_the_word_at_offset_4_in_network_order() {
        let key = U32Match { value: 0x1234_5678, mask: 0xffff_ffff, offset: 4 };
        let b = bytes(&redirect_filter_message(&iface("ln0", 2), key, 7, &iface("r1", 9)));
        // TCA_U32_SEL (type 5, 4 + 16 + 16 bytes): struct tc_u32_sel, then
        // one struct tc_u32_key (mask and value big-endian, offsets native).
        let mut sel = vec![36, 0, 5, 0];
        sel.extend([1, 0, 1, 0]); // flags TC_U32_TERMINAL, offshift, nkeys 1, pad
        sel.extend([0; 12]); // offmask, off, offoff, hoff, hmask
        sel.extend([0xff, 0xff, 0xff, 0xff, 0x12, 0x34, 0x56, 0x78]);
        sel.extend(4i32.to_ne_bytes());
        sel.extend(0i32.to_ne_bytes());
        assert!(find(&b, &sel).is_some(), "selector bytes not in {b:02x?}");
    }

    #[test]
    fn the_filter_header_names_the_device_ingress_parent_priority_and_all_protocols() {
        let b = bytes(&redirect_filter_message(&iface("ln0", 2), U32Match::ANY, 7, &iface("r1", 9)));
        // struct tcmsg: family u8, pad 3, ifindex i32, handle u32, parent u32, info u32.
        assert_eq!(b[0], 0);
        assert_eq!(i32::from_ne_bytes(b[4..8].try_into().unwrap()), 2);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 0, "the kernel picks the handle");
        assert_eq!(u32::from_ne_bytes(b[12..16].try_into().unwrap()), 0xffff_0000);
        assert_eq!(u32::from_ne_bytes(b[16..20].try_into().unwrap()), (7 << 16) | u32::from(0x0003u16.to_be()));
        assert!(find(&b, b"u32\0").is_some());
    }

    #[test]
    fn the_action_is_a_stolen_egress_redirect_to_the_target_index() {
        let b = bytes(&redirect_filter_message(&iface("ln0", 2), U32Match::ANY, 0, &iface("r1", 9)));
        assert!(find(&b, b"mirred\0").is_some());
        // struct tc_mirred: tc_gen (index, capab, action = TC_ACT_STOLEN 4,
        // refcnt, bindcnt), eaction = TCA_EGRESS_REDIR 1, ifindex.
        let mut parms = Vec::new();
        for v in [0u32, 0, 4, 0, 0, 1, 9] {
            parms.extend(v.to_ne_bytes());
        }
        assert!(find(&b, &parms).is_some(), "tc_mirred not in {b:02x?}");
    }

    #[test]
    fn the_catch_all_key_has_zero_mask_and_value() {
        let b = bytes(&redirect_filter_message(&iface("tap0", 3), U32Match::ANY, 0, &iface("ln0", 2)));
        let mut key = vec![1, 0, 1, 0];
        key.extend([0; 12 + 16]);
        assert!(find(&b, &key).is_some());
        let info = u32::from_ne_bytes(b[16..20].try_into().unwrap());
        assert_eq!(info >> 16, 0, "priority left to the kernel");
    }

    #[test]
    fn the_ingress_qdisc_is_ffff_colon_under_the_ingress_parent() {
        let b = bytes(&ingress_qdisc_message(&iface("ln0", 2)));
        assert_eq!(i32::from_ne_bytes(b[4..8].try_into().unwrap()), 2);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 0xffff_0000);
        assert_eq!(u32::from_ne_bytes(b[12..16].try_into().unwrap()), 0xffff_fff1);
        assert!(find(&b, b"ingress\0").is_some());
    }

    #[test]
    fn deleting_by_priority_matches_any_protocol() {
        let b = bytes(&filter_del_message(&iface("ln0", 2), 40_000));
        assert_eq!(b.len(), 20, "header only");
        assert_eq!(u32::from_ne_bytes(b[12..16].try_into().unwrap()), 0xffff_0000);
        assert_eq!(u32::from_ne_bytes(b[16..20].try_into().unwrap()), 40_000 << 16);
    }
}
