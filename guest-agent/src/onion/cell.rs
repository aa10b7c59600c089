//! Onion cells: every onion packet's payload is exactly [`CELL_LEN`] bytes.
//!
//! ```text
//! cell   = nonce (12) | body (CELL_LEN - 12)
//! body   = create header (HEADER_LEN) | region      (create cells)
//!        = region                                 (data cells)
//! region, at the circuit's end after all layers:
//!        = tag (16) | cmd (1) | len (2) | data (len) | zeros
//! ```
//! The region is sealed end to end (ChaCha20-Poly1305 under the exit's
//! forward or backward key) and wrapped in one ChaCha20 layer per relay.
//! Whether a cell is a create or a data cell is not on the wire: a relay
//! knows from whether the circuit it arrives on exists.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};

use super::header::HEADER_LEN;

/// Bytes of every onion cell (the overlay payload of an onion packet).
pub const CELL_LEN: usize = 1400;
/// Bytes of a cell's nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes after the nonce.
pub const BODY_LEN: usize = CELL_LEN - NONCE_LEN;
const INNER: usize = 16 + 1 + 2;
/// Most data bytes one data cell carries.
pub const MAX_DATA: usize = BODY_LEN - INNER;
/// Most data bytes a create cell carries (after its header).
pub const MAX_CREATE_DATA: usize = BODY_LEN - HEADER_LEN - INNER;
/// Command: the data is a transport segment of the circuit's stream.
pub const CMD_STREAM: u8 = 1;
/// Command (create cells): the data is the stream's token, then
/// optionally a segment. A token the exit does not know opens a stream (the
/// segment is its SYN); a known one moves that stream onto this circuit,
/// which is how a source replaces a circuit whose relay died.
pub const CMD_ATTACH: u8 = 2;
/// Bytes of a stream token.
pub const TOKEN_LEN: usize = 16;

/// Why a cell was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellError {
    /// Not [`CELL_LEN`] bytes, or data too long for a cell.
    BadLength,
    /// The end-to-end seal did not verify.
    BadSeal,
}

/// Seals `data` under command `cmd` into `region` (zero-padded), as the
/// circuit's end will open it.
pub fn seal_region(key: &[u8; 32], nonce: &[u8; 12], cmd: u8, data: &[u8], region: &mut [u8]) -> Result<(), CellError> {
    if region.len() < INNER || data.len() > region.len() - INNER {
        return Err(CellError::BadLength);
    }
    region.fill(0);
    region[16] = cmd;
    region[17..19].copy_from_slice(&(data.len() as u16).to_be_bytes());
    region[19..19 + data.len()].copy_from_slice(data);
    let aead = ChaCha20Poly1305::new(&Key::from(*key));
    let (tag, rest) = region.split_at_mut(16);
    let t = aead.encrypt_inout_detached(&Nonce::from(*nonce), &[], rest.into()).map_err(|_| CellError::BadLength)?;
    tag.copy_from_slice(&t[..16]);
    Ok(())
}

/// Opens a sealed `region` in place: the command and the data's range in
/// `region`.
pub fn open_region(
    key: &[u8; 32],
    nonce: &[u8; 12],
    region: &mut [u8],
) -> Result<(u8, core::ops::Range<usize>), CellError> {
    if region.len() < INNER {
        return Err(CellError::BadLength);
    }
    let aead = ChaCha20Poly1305::new(&Key::from(*key));
    let (tag, rest) = region.split_at_mut(16);
    let tag = Tag::try_from(&tag[..]).map_err(|_| CellError::BadSeal)?;
    aead.decrypt_inout_detached(&Nonce::from(*nonce), &[], rest.into(), &tag).map_err(|_| CellError::BadSeal)?;
    let len = u16::from_be_bytes([region[17], region[18]]) as usize;
    if len > region.len() - INNER {
        return Err(CellError::BadLength);
    }
    Ok((region[16], 19..19 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_region_opens_only_unaltered_and_under_its_key() {
        let (k, n) = ([5u8; 32], [6u8; 12]);
        let mut r = [0u8; BODY_LEN];
        seal_region(&k, &n, CMD_STREAM, b"hello", &mut r).unwrap();
        assert!(!r.windows(5).any(|w| w == b"hello"), "data is encrypted");
        let mut ok = r;
        let (cmd, range) = open_region(&k, &n, &mut ok).unwrap();
        assert_eq!((cmd, &ok[range]), (CMD_STREAM, &b"hello"[..]));
        let mut bad = r;
        bad[100] ^= 1;
        assert_eq!(open_region(&k, &n, &mut bad), Err(CellError::BadSeal));
        let mut other = r;
        assert_eq!(open_region(&[7; 32], &n, &mut other), Err(CellError::BadSeal));
    }

    #[test]
    fn data_that_does_not_fit_is_refused() {
        let mut r = [0u8; BODY_LEN];
        assert!(seal_region(&[0; 32], &[0; 12], 1, &[0; MAX_DATA], &mut r).is_ok());
        assert_eq!(seal_region(&[0; 32], &[0; 12], 1, &[0; MAX_DATA + 1], &mut r), Err(CellError::BadLength));
        let mut tiny = [0u8; 4];
        assert_eq!(open_region(&[0; 32], &[0; 12], &mut tiny), Err(CellError::BadLength));
    }
}
