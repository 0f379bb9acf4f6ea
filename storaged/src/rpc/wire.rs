//! Sans-IO codec of the request and response frame payloads (layout in the
//! [module doc](super)).
//!
//! Everything read here comes from a peer: lengths are checked before slicing, and a
//! malformed payload is an error value, never a panic.

use serde::{Serialize, de::DeserializeOwned};

use super::{RemoteError, RpcError, Service};
use crate::util::encode::{self, EncodeError};

/// The longest service name on the wire.
pub const MAX_SERVICE_NAME: usize = 64;

/// Response status byte: the handler's response follows.
pub const STATUS_OK: u8 = 0;

/// Response status byte: a [`RemoteError`] follows.
pub const STATUS_ERR: u8 = 1;

// A name must fit its one-byte length prefix.
const _: () = assert!(MAX_SERVICE_NAME <= u8::MAX as usize);

/// Encodes the request payload of service `S`.
///
/// # Errors
/// The request cannot be encoded.
pub fn encode_request<S: Service>(req: &S::Req) -> Result<Vec<u8>, EncodeError> {
    let name = S::NAME.as_bytes();
    debug_assert!(
        !name.is_empty() && name.len() <= MAX_SERVICE_NAME && S::NAME.is_ascii(),
        "service name {:?} breaks the wire rules",
        S::NAME
    );
    let body = encode::encode(req)?;
    let mut out = Vec::with_capacity(1 + name.len() + body.len());
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(name);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Splits a request payload into its service name and encoded body.
///
/// # Errors
/// [`RemoteError::BadRequest`] if the payload is too short or the name is empty, too long
/// or not ASCII.
pub fn split_request(payload: &[u8]) -> Result<(&str, &[u8]), RemoteError> {
    let bad = |why: &str| RemoteError::BadRequest(why.to_owned());
    let (&len, rest) = payload.split_first().ok_or_else(|| bad("empty request"))?;
    let len = usize::from(len);
    if len == 0 || len > MAX_SERVICE_NAME {
        return Err(bad("bad service name length"));
    }
    let name = rest
        .get(..len)
        .ok_or_else(|| bad("request shorter than its service name"))?;
    let body = rest.get(len..).unwrap_or_default();
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|n| n.is_ascii())
        .ok_or_else(|| bad("service name is not ASCII"))?;
    Ok((name, body))
}

/// Encodes a response payload: the handler's response, or why there is none.
///
/// # Errors
/// The response cannot be encoded.
pub fn encode_response<T: Serialize>(
    resp: &Result<T, RemoteError>,
) -> Result<Vec<u8>, EncodeError> {
    let (status, body) = match resp {
        Ok(v) => (STATUS_OK, encode::encode(v)?),
        Err(e) => (STATUS_ERR, encode::encode(e)?),
    };
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(status);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a response payload.
///
/// # Errors
/// [`RpcError::Remote`] if the peer answered with an error, [`RpcError::Protocol`] or
/// [`RpcError::Encode`] if the payload is malformed.
pub fn decode_response<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RpcError> {
    match payload.split_first() {
        Some((&STATUS_OK, body)) => Ok(encode::decode(body)?),
        Some((&STATUS_ERR, body)) => Err(RpcError::Remote(encode::decode(body)?)),
        Some(_) => Err(RpcError::Protocol("unknown response status")),
        None => Err(RpcError::Protocol("empty response")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    struct Echo;
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum EchoReq {
        Say(String),
    }
    impl Service for Echo {
        const NAME: &'static str = "echo";
        type Req = EchoReq;
        type Resp = u64;
    }

    #[test]
    fn request_round_trip_and_layout() {
        let p = encode_request::<Echo>(&EchoReq::Say("hi".into())).unwrap();
        assert_eq!(&p[..6], b"\x04echo\x01", "length, name, format version");
        let (name, body) = split_request(&p).unwrap();
        assert_eq!(name, "echo");
        assert_eq!(
            encode::decode::<EchoReq>(body).unwrap(),
            EchoReq::Say("hi".into())
        );
    }

    #[test]
    fn response_round_trip() {
        let ok = encode_response::<u64>(&Ok(7)).unwrap();
        assert_eq!(decode_response::<u64>(&ok).unwrap(), 7);
        let err = encode_response::<u64>(&Err(RemoteError::UnknownService("x".into()))).unwrap();
        assert!(matches!(
            decode_response::<u64>(&err),
            Err(RpcError::Remote(RemoteError::UnknownService(n))) if n == "x"
        ));
        assert!(matches!(
            decode_response::<u64>(&[]),
            Err(RpcError::Protocol(_))
        ));
        assert!(matches!(
            decode_response::<u64>(&[9, 1]),
            Err(RpcError::Protocol(_))
        ));
        assert!(matches!(
            decode_response::<u64>(&[0]),
            Err(RpcError::Encode(_))
        ));
    }

    #[test]
    fn malformed_requests_are_errors() {
        for bad in [&b""[..], b"\x00", b"\x05echo", b"\x41", b"\x02\xff\xfe"] {
            assert!(split_request(bad).is_err(), "{bad:?}");
        }
        assert_eq!(split_request(b"\x01a").unwrap(), ("a", &b""[..]));
    }

    proptest! {
        /// Garbage never panics either decoder.
        #[test]
        fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = split_request(&buf);
            let _ = decode_response::<(u64, String)>(&buf);
        }
    }
}
