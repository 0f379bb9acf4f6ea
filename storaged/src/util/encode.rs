//! Versioned encoding of every record we persist or send.
//!
//! Byte layout of an encoded record:
//!
//! | offset | size | content |
//! | --- | --- | --- |
//! | 0 | 1 | format version, [`FORMAT_V1`] |
//! | 1 | .. | MessagePack with named fields (`rmp_serde::to_vec_named`) |
//!
//! Named fields let a later version add optional fields without a migration; a new format
//! version byte chains a migration for anything more.

use serde::{Serialize, de::DeserializeOwned};

/// The only format version so far.
pub const FORMAT_V1: u8 = 1;

/// Errors of [`encode`] / [`decode`].
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The record could not be serialized.
    #[error("cannot encode record: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes are not a record of a known format.
    #[error("cannot decode record: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The version byte is unknown (written by a newer daemon?).
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// Zero bytes.
    #[error("empty record")]
    Empty,
}

/// Encodes `value` with the version prefix.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![FORMAT_V1];
    rmp_serde::encode::write_named(&mut out, value)?;
    Ok(out)
}

/// Decodes bytes written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EncodeError> {
    match bytes.split_first() {
        None => Err(EncodeError::Empty),
        Some((&FORMAT_V1, rest)) => Ok(rmp_serde::from_slice(rest)?),
        Some((&v, _)) => Err(EncodeError::UnknownVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_input() {
        let v = (1u32, "x".to_string());
        let enc = encode(&v).expect("encode");
        assert_eq!(decode::<(u32, String)>(&enc).expect("decode"), v);
        assert!(matches!(decode::<u32>(&[]), Err(EncodeError::Empty)));
        assert!(matches!(
            decode::<u32>(&[9, 1]),
            Err(EncodeError::UnknownVersion(9))
        ));
        assert!(decode::<(u32, String)>(&[FORMAT_V1, 0xc1]).is_err());
    }
}
