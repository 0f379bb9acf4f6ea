//! Persisted and replicated records: table entries (decode, re-encode, merge) and the layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storaged::fuzzing::record(data));
