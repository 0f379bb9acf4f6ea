//! RPC streams: frames, then service requests and responses.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storaged::fuzzing::rpc(data));
