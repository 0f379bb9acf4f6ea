//! Raw HTTP/1.1 bytes (optionally SigV4-signed by the harness) into a single-node S3 service.
#![no_main]

use std::sync::LazyLock;

use storaged::fuzzing::S3Harness;

static HARNESS: LazyLock<S3Harness> = LazyLock::new(S3Harness::new);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HARNESS.request(data);
});
