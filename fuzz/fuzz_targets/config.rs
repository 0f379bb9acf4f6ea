//! `storaged.toml` text and `STORAGED_*` overrides.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storaged::fuzzing::config(data));
