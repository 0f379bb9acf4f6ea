//! Sans-IO codec of the length-delimited frame (layout in the [module doc](super)).
//!
//! Like mini-redis' `Frame::check` before `Frame::parse`: [`check`] looks only at the
//! bytes already buffered and says whether a whole frame is there, without allocating;
//! [`parse`] then borrows the payload. The stream readers ([`super::FrameRecv`]) use the
//! same [`decode_len`], so a length read off the wire is validated in one place before
//! anything is allocated for it.

/// Bytes of the big-endian `u32` length prefix of a frame.
pub const LEN_PREFIX: usize = 4;

/// The largest payload a frame may carry: 64 MiB.
///
/// A bound chosen so that a peer (or a corrupt stream) can never make us allocate more
/// than this for one message; bulk data goes through bodies, which are read in pieces.
pub const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

// The limit must fit the `u32` length prefix, or a legal frame could not be encoded.
const _: () = assert!(MAX_FRAME_LEN <= u32::MAX as usize);

/// Bytes of the big-endian `u64` length prefix of a body.
pub const BODY_LEN_PREFIX: usize = 8;

/// Why a buffer does not hold a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer (or the stream) ends before the frame does: wait for more bytes, or
    /// if the stream is finished, the peer sent a truncated frame.
    #[error("incomplete frame")]
    Incomplete,
    /// The length prefix announces more than [`MAX_FRAME_LEN`]: the stream is corrupt
    /// or hostile, and nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced payload length.
        len: u64,
        /// The limit it broke.
        max: usize,
    },
}

/// Validates a length prefix read off the wire and returns the payload length.
///
/// # Errors
/// [`FrameError::TooLarge`] if it exceeds [`MAX_FRAME_LEN`].
pub fn decode_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    match usize::try_from(len) {
        Ok(n) if n <= MAX_FRAME_LEN => Ok(n),
        _ => Err(FrameError::TooLarge {
            len: u64::from(len),
            max: MAX_FRAME_LEN,
        }),
    }
}

/// Encodes the length prefix of a `len`-byte payload.
///
/// # Errors
/// [`FrameError::TooLarge`] if `len` exceeds [`MAX_FRAME_LEN`]: we refuse to send what a
/// peer would refuse to read.
pub fn encode_len(len: usize) -> Result<[u8; LEN_PREFIX], FrameError> {
    match u32::try_from(len) {
        Ok(n) if len <= MAX_FRAME_LEN => Ok(n.to_be_bytes()),
        _ => Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        }),
    }
}

/// Checks whether `buf` starts with a whole frame, without allocating.
///
/// Returns the frame's total encoded size (prefix + payload), i.e. how many bytes
/// [`parse`] will consume.
///
/// # Errors
/// [`FrameError::Incomplete`] if more bytes are needed, [`FrameError::TooLarge`] if the
/// prefix announces an oversized payload (checked before waiting for it).
pub fn check(buf: &[u8]) -> Result<usize, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Err(FrameError::Incomplete);
    };
    let len = decode_len(*prefix)?;
    let total = LEN_PREFIX + len;
    if buf.len() < total {
        return Err(FrameError::Incomplete);
    }
    Ok(total)
}

/// Parses the frame at the start of `buf`: returns its payload and the bytes consumed.
///
/// # Errors
/// As [`check`].
pub fn parse(buf: &[u8]) -> Result<(&[u8], usize), FrameError> {
    let total = check(buf)?;
    let payload = buf.get(LEN_PREFIX..total).ok_or(FrameError::Incomplete)?;
    Ok((payload, total))
}

/// Appends the frame carrying `payload` to `out`.
///
/// # Errors
/// [`FrameError::TooLarge`] if the payload exceeds [`MAX_FRAME_LEN`].
pub fn encode(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let prefix = encode_len(payload.len())?;
    out.reserve(LEN_PREFIX + payload.len());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(b"hello", &mut buf).unwrap();
        encode(b"", &mut buf).unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 5]);
        let (p, n) = parse(&buf).unwrap();
        assert_eq!((p, n), (&b"hello"[..], 9));
        let (p, n) = parse(&buf[9..]).unwrap();
        assert_eq!((p, n), (&b""[..], 4));
    }

    #[test]
    fn short_input_is_incomplete() {
        assert_eq!(check(&[]), Err(FrameError::Incomplete));
        assert_eq!(check(&[0, 0, 0]), Err(FrameError::Incomplete));
        assert_eq!(check(&[0, 0, 0, 3, 1, 2]), Err(FrameError::Incomplete));
        assert_eq!(parse(&[0, 0, 0, 3, 1, 2]), Err(FrameError::Incomplete));
    }

    #[test]
    fn oversized_is_refused_before_the_payload_arrives() {
        let too_big = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
        assert!(matches!(check(&too_big), Err(FrameError::TooLarge { .. })));
        assert!(matches!(
            check(&u32::MAX.to_be_bytes()),
            Err(FrameError::TooLarge { len, .. }) if len == u64::from(u32::MAX)
        ));
        let at_max = u32::try_from(MAX_FRAME_LEN).unwrap().to_be_bytes();
        assert_eq!(check(&at_max), Err(FrameError::Incomplete));
        assert!(matches!(
            encode_len(MAX_FRAME_LEN + 1),
            Err(FrameError::TooLarge { .. })
        ));
    }

    proptest! {
        /// Garbage never panics; whatever parses is consistent with its prefix.
        #[test]
        fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            match parse(&buf) {
                Ok((payload, used)) => {
                    prop_assert_eq!(used, LEN_PREFIX + payload.len());
                    prop_assert!(used <= buf.len());
                    prop_assert_eq!(&buf[..4], &encode_len(payload.len()).unwrap()[..]);
                }
                Err(FrameError::Incomplete | FrameError::TooLarge { .. }) => {}
            }
        }

        /// Every encoded payload parses back, and every strict prefix is `Incomplete`.
        #[test]
        fn encode_parse_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = Vec::new();
            encode(&payload, &mut buf).unwrap();
            let (p, used) = parse(&buf).unwrap();
            prop_assert_eq!(p, &payload[..]);
            prop_assert_eq!(used, buf.len());
            for cut in 0..buf.len() {
                prop_assert_eq!(check(&buf[..cut]), Err(FrameError::Incomplete));
            }
        }
    }
}
