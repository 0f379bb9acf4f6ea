//! Flexible checksums (CRC32, CRC32C, CRC64NVME, SHA1, SHA256): what the client expects,
//! computing them, and full-object vs composite values for multipart objects.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::{S3Result, s3_error};

use crate::model::object::{ChecksumAlgo, ChecksumKind, StoredChecksum};

/// A running checksum of one algorithm.
pub(super) enum Hasher {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Crc64(Crc64Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    pub(super) fn new(algo: ChecksumAlgo) -> Self {
        match algo {
            ChecksumAlgo::Crc32 => Self::Crc32(Crc32::new()),
            ChecksumAlgo::Crc32c => Self::Crc32c(Crc32c::new()),
            ChecksumAlgo::Crc64Nvme => Self::Crc64(Crc64Nvme::new()),
            ChecksumAlgo::Sha1 => Self::Sha1(Sha1::new()),
            ChecksumAlgo::Sha256 => Self::Sha256(Sha256::new()),
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(h) => h.update(data),
            Self::Crc64(h) => h.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    pub(super) fn finalize(self) -> Vec<u8> {
        match self {
            Self::Crc32(h) => h.finalize().as_ref().to_vec(),
            Self::Crc32c(h) => h.finalize().as_ref().to_vec(),
            Self::Crc64(h) => h.finalize().as_ref().to_vec(),
            Self::Sha1(h) => h.finalize().as_ref().to_vec(),
            Self::Sha256(h) => h.finalize().as_ref().to_vec(),
        }
    }
}

pub(super) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// `CRC32` / `crc32` / `x-amz-checksum-crc32` → algorithm.
pub(super) fn algo_from_name(name: &str) -> Option<ChecksumAlgo> {
    let n = name.trim().to_ascii_lowercase();
    let n = n.strip_prefix("x-amz-checksum-").unwrap_or(&n);
    Some(match n {
        "crc32" => ChecksumAlgo::Crc32,
        "crc32c" => ChecksumAlgo::Crc32c,
        "crc64nvme" => ChecksumAlgo::Crc64Nvme,
        "sha1" => ChecksumAlgo::Sha1,
        "sha256" => ChecksumAlgo::Sha256,
        _ => return None,
    })
}

/// The S3 name of an algorithm (`ChecksumAlgorithm` values).
pub(super) fn algo_name(algo: ChecksumAlgo) -> &'static str {
    match algo {
        ChecksumAlgo::Crc32 => "CRC32",
        ChecksumAlgo::Crc32c => "CRC32C",
        ChecksumAlgo::Crc64Nvme => "CRC64NVME",
        ChecksumAlgo::Sha1 => "SHA1",
        ChecksumAlgo::Sha256 => "SHA256",
    }
}

/// The five `checksum_*` fields of any S3 input (or completed part), as [`Fields`].
macro_rules! fields_of {
    ($x:expr) => {
        $crate::s3::checksum::Fields {
            crc32: $x.checksum_crc32.clone(),
            crc32c: $x.checksum_crc32c.clone(),
            crc64nvme: $x.checksum_crc64nvme.clone(),
            sha1: $x.checksum_sha1.clone(),
            sha256: $x.checksum_sha256.clone(),
        }
    };
}

/// An S3 output struct literal with its five `checksum_*` fields taken from a [`Fields`]
/// and the rest defaulted.
macro_rules! with_checksums {
    ($ty:ident { $($field:ident : $value:expr),* $(,)? }, $fields:expr) => {{
        let f: $crate::s3::checksum::Fields = $fields;
        #[allow(clippy::needless_update, reason = "some outputs have no other field")]
        let out = $ty {
            $($field: $value,)*
            checksum_crc32: f.crc32,
            checksum_crc32c: f.crc32c,
            checksum_crc64nvme: f.crc64nvme,
            checksum_sha1: f.sha1,
            checksum_sha256: f.sha256,
            ..Default::default()
        };
        out
    }};
}

pub(super) use {fields_of, with_checksums};

/// The five checksum value fields every S3 input and output carries.
#[derive(Default, Clone)]
pub(super) struct Fields {
    pub(super) crc32: Option<String>,
    pub(super) crc32c: Option<String>,
    pub(super) crc64nvme: Option<String>,
    pub(super) sha1: Option<String>,
    pub(super) sha256: Option<String>,
}

impl Fields {
    pub(super) fn of(c: &StoredChecksum) -> Self {
        let mut f = Self::default();
        *f.slot(c.algo) = Some(c.value.clone());
        f
    }

    fn slot(&mut self, algo: ChecksumAlgo) -> &mut Option<String> {
        match algo {
            ChecksumAlgo::Crc32 => &mut self.crc32,
            ChecksumAlgo::Crc32c => &mut self.crc32c,
            ChecksumAlgo::Crc64Nvme => &mut self.crc64nvme,
            ChecksumAlgo::Sha1 => &mut self.sha1,
            ChecksumAlgo::Sha256 => &mut self.sha256,
        }
    }

    /// The single (algorithm, value) given, if any; several is an error.
    pub(super) fn single(&self) -> S3Result<Option<(ChecksumAlgo, String)>> {
        let all = [
            (ChecksumAlgo::Crc32, &self.crc32),
            (ChecksumAlgo::Crc32c, &self.crc32c),
            (ChecksumAlgo::Crc64Nvme, &self.crc64nvme),
            (ChecksumAlgo::Sha1, &self.sha1),
            (ChecksumAlgo::Sha256, &self.sha256),
        ];
        let mut given = all
            .into_iter()
            .filter_map(|(a, v)| v.clone().map(|v| (a, v)));
        let first = given.next();
        if given.next().is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "Expecting a single x-amz-checksum- header"
            ));
        }
        Ok(first)
    }

    /// The S3 `ChecksumType` of a stored checksum.
    pub(super) fn kind_name(c: &StoredChecksum) -> &'static str {
        match c.kind {
            ChecksumKind::FullObject => "FULL_OBJECT",
            ChecksumKind::Composite => "COMPOSITE",
        }
    }
}

/// What the client asked for on an upload: an algorithm, and maybe the value it expects
/// (from a header now, or from a trailer once the body is read).
#[derive(Debug, Clone, Default)]
pub(super) struct Expected {
    pub(super) algo: Option<ChecksumAlgo>,
    pub(super) value: Option<String>,
    pub(super) trailer: Option<String>,
}

impl Expected {
    /// Reads the expectation from the checksum headers, `x-amz-trailer` and the
    /// `x-amz-sdk-checksum-algorithm` hint.
    pub(super) fn from_request(
        headers: &HeaderMap,
        fields: &Fields,
        hint: Option<&str>,
    ) -> S3Result<Self> {
        let mut e = Self::default();
        if let Some((algo, value)) = fields.single()? {
            e.algo = Some(algo);
            e.value = Some(value);
        }
        if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
            let t = t.trim().to_ascii_lowercase();
            if t.starts_with("x-amz-checksum-") {
                let algo = algo_from_name(&t).ok_or_else(|| {
                    s3_error!(
                        InvalidRequest,
                        "unsupported checksum algorithm in x-amz-trailer"
                    )
                })?;
                e.algo = Some(algo);
                e.trailer = Some(t);
            }
        }
        if e.algo.is_none()
            && let Some(h) = hint
        {
            e.algo = Some(
                algo_from_name(h)
                    .ok_or_else(|| s3_error!(InvalidRequest, "unsupported checksum algorithm"))?,
            );
        }
        Ok(e)
    }

    /// Fails with BadDigest unless `computed` (raw bytes) matches the expected value; the
    /// trailer value is read from `trailers` after the body.
    pub(super) fn verify(
        &mut self,
        computed: Option<&[u8]>,
        trailers: Option<&HeaderMap>,
    ) -> S3Result<()> {
        if let (Some(name), Some(t)) = (&self.trailer, trailers)
            && let Some(v) = t.get(name.as_str()).and_then(|v| v.to_str().ok())
        {
            self.value = Some(v.trim().to_string());
        }
        if let (Some(expected), Some(computed)) = (&self.value, computed)
            && *expected != b64(computed)
        {
            return Err(s3_error!(
                BadDigest,
                "The checksum you specified did not match the calculated checksum"
            ));
        }
        Ok(())
    }
}

/// Checks `Content-MD5` (base64 of 16 bytes) against the computed MD5.
pub(super) fn verify_content_md5(header: Option<&str>, md5: &[u8; 16]) -> S3Result<()> {
    let Some(h) = header else { return Ok(()) };
    let given = base64::engine::general_purpose::STANDARD
        .decode(h.trim())
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or_else(|| s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid"))?;
    if given != md5 {
        return Err(s3_error!(
            BadDigest,
            "The Content-MD5 you specified did not match what we received"
        ));
    }
    Ok(())
}

/// Fails early with InvalidDigest on a malformed Content-MD5.
pub(super) fn check_content_md5_shape(header: Option<&str>) -> S3Result<()> {
    match header {
        Some(h) if B64.decode(h.trim()).map_or(true, |b| b.len() != 16) => Err(s3_error!(
            InvalidDigest,
            "The Content-MD5 you specified is not valid"
        )),
        _ => Ok(()),
    }
}

/// Composite checksum of a multipart object: checksum of the concatenated raw part
/// checksums, rendered `b64-N`.
pub(super) fn composite(algo: ChecksumAlgo, part_values_b64: &[String]) -> Option<String> {
    let mut h = Hasher::new(algo);
    for v in part_values_b64 {
        h.update(&B64.decode(v).ok()?);
    }
    Some(format!("{}-{}", b64(&h.finalize()), part_values_b64.len()))
}

/// Full-object CRC of a multipart object from its parts' CRCs and sizes (CRC algorithms
/// only: SHA digests do not combine).
pub(super) fn combine_crc(algo: ChecksumAlgo, parts: &[(String, u64)]) -> Option<String> {
    let (crc_algo, width) = match algo {
        ChecksumAlgo::Crc32 => (crc_fast::CrcAlgorithm::Crc32IsoHdlc, 4),
        ChecksumAlgo::Crc32c => (crc_fast::CrcAlgorithm::Crc32Iscsi, 4),
        ChecksumAlgo::Crc64Nvme => (crc_fast::CrcAlgorithm::Crc64Nvme, 8),
        ChecksumAlgo::Sha1 | ChecksumAlgo::Sha256 => return None,
    };
    let mut acc: Option<u64> = None;
    for (v, len) in parts {
        let raw = B64.decode(v).ok()?;
        if raw.len() != width {
            return None;
        }
        let mut buf = [0u8; 8];
        buf[8 - width..].copy_from_slice(&raw);
        let crc = u64::from_be_bytes(buf);
        acc = Some(match acc {
            None => crc,
            Some(a) => crc_fast::checksum_combine(crc_algo, a, crc, *len),
        });
    }
    let v = acc?.to_be_bytes();
    Some(b64(&v[8 - width..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc_of(algo: ChecksumAlgo, data: &[u8]) -> String {
        let mut h = Hasher::new(algo);
        h.update(data);
        b64(&h.finalize())
    }

    #[test]
    fn combined_crc_equals_crc_of_whole() {
        let (a, b) = (b"hello ".as_slice(), b"world, this is a test".as_slice());
        for algo in [
            ChecksumAlgo::Crc32,
            ChecksumAlgo::Crc32c,
            ChecksumAlgo::Crc64Nvme,
        ] {
            let parts = vec![
                (crc_of(algo, a), a.len() as u64),
                (crc_of(algo, b), b.len() as u64),
            ];
            let whole = [a, b].concat();
            assert_eq!(
                combine_crc(algo, &parts),
                Some(crc_of(algo, &whole)),
                "{algo:?}"
            );
        }
        assert_eq!(combine_crc(ChecksumAlgo::Sha256, &[]), None);
    }

    #[test]
    fn known_crc32_value() {
        // CRC-32 of "123456789" is 0xCBF43926.
        assert_eq!(
            crc_of(ChecksumAlgo::Crc32, b"123456789"),
            b64(&0xCBF4_3926u32.to_be_bytes())
        );
    }

    #[test]
    fn content_md5_checks() {
        let md5 = [0u8; 16];
        assert!(verify_content_md5(Some(&b64(&md5)), &md5).is_ok());
        assert!(verify_content_md5(Some("bm90bWQ1"), &md5).is_err());
        assert!(check_content_md5_shape(Some("!!")).is_err());
    }
}
