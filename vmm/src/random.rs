//! Secret random bytes from the kernel, and their hex form in config files.

/// `N` bytes from getrandom(2) (or /dev/urandom where that call is
/// missing). Without a source of randomness no key can be made, so that
/// ends the process with a message rather than weak keys.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: writes at most N - filled bytes into the rest of b.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n > 0 {
            filled += n as usize;
            continue;
        }
        if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b[filled..]))
            .expect("no randomness: getrandom(2) failed and /dev/urandom cannot be read");
        break;
    }
    b
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    // The agent's: certificates' signed bytes carry keys in this form.
    guest_agent::routing::member::hex(b)
}

/// 32 bytes from 64 hex digits; `what` names the value in the error.
pub fn parse_hex32(s: &str, what: &str) -> Result<[u8; 32], String> {
    parse_hex(s, what)
}

/// `N` bytes from `2N` hex digits; `what` names the value in the error.
pub fn parse_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    let bad = || format!("{what} must be {} hex digits", 2 * N);
    let mut k = [0u8; N];
    if s.len() != 2 * N || !s.is_ascii() {
        return Err(bad());
    }
    for (i, o) in k.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_bad_hex_is_named() {
        let k: [u8; 32] = bytes();
        assert_eq!(parse_hex32(&hex(&k), "a key"), Ok(k));
        assert_ne!(bytes::<32>(), k);
        assert_eq!(parse_hex32("abc", "a link key").unwrap_err(), "a link key must be 64 hex digits");
        assert!(parse_hex32(&"zz".repeat(32), "x").is_err());
        assert!(parse_hex32(&"é".repeat(32), "x").is_err());
    }
}
