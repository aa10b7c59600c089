//! The transport segment header, inside an overlay packet's payload.
//!
//! ```text
//! 0      1      2             4                    8                    12
//! +------+------+-------------+--------------------+--------------------+
//! | kind | rsvd | window (KiB)|  sequence number   | acknowledgement    |
//! +------+------+-------------+--------------------+--------------------+
//! 12: data
//! ```
//! Sequence numbers count bytes (SYN and FIN take one each); the
//! acknowledgement is the next byte expected. Big-endian.

/// Header length.
pub const HEADER_LEN: usize = 12;

/// What a segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opens a stream; the data names the destination service.
    Syn,
    /// Accepts a stream.
    SynAck,
    /// Carries data (or only an acknowledgement when empty).
    Data,
    /// No more data from the sender.
    Fin,
    /// Abort: the stream is gone (e.g. the service refused it).
    Rst,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Self::Syn => 1,
            Self::SynAck => 2,
            Self::Data => 3,
            Self::Fin => 4,
            Self::Rst => 5,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Self::Syn,
            2 => Self::SynAck,
            3 => Self::Data,
            4 => Self::Fin,
            5 => Self::Rst,
            _ => return None,
        })
    }
}

/// A parsed segment, borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Its kind.
    pub kind: Kind,
    /// The sender's receive window, KiB.
    pub window_kib: u16,
    /// First sequence number it carries.
    pub seq: u32,
    /// Next sequence number the sender expects.
    pub ack: u32,
    /// Payload.
    pub data: &'a [u8],
}

/// Why a segment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentError {
    /// Shorter than the header.
    Truncated,
    /// Unknown kind.
    BadKind(u8),
}

impl<'a> Segment<'a> {
    /// Parses `b` (total: any input is a segment or an error).
    pub fn parse(b: &'a [u8]) -> Result<Self, SegmentError> {
        if b.len() < HEADER_LEN {
            return Err(SegmentError::Truncated);
        }
        let kind = Kind::from_code(b[0]).ok_or(SegmentError::BadKind(b[0]))?;
        Ok(Self {
            kind,
            window_kib: u16::from_be_bytes([b[2], b[3]]),
            seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ack: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            data: &b[HEADER_LEN..],
        })
    }

    /// Appends the encoding to `out`.
    pub fn emit(&self, out: &mut alloc::vec::Vec<u8>) {
        out.push(self.kind.code());
        out.push(0);
        out.extend_from_slice(&self.window_kib.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ack.to_be_bytes());
        out.extend_from_slice(self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn golden_round_trip() {
        let s = Segment { kind: Kind::Data, window_kib: 256, seq: 0x0102_0304, ack: 9, data: b"hi" };
        let mut b = Vec::new();
        s.emit(&mut b);
        assert_eq!(b, [3, 0, 1, 0, 1, 2, 3, 4, 0, 0, 0, 9, b'h', b'i']);
        assert_eq!(Segment::parse(&b), Ok(s));
    }

    #[test]
    fn test_truncated_and_bad_kind() {
        for n in 0..HEADER_LEN {
            assert_eq!(Segment::parse(&[3; 12][..n]), Err(SegmentError::Truncated));
        }
        assert_eq!(Segment::parse(&[9; 12]), Err(SegmentError::BadKind(9)));
    }
}
