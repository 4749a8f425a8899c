//! The configuration parser on arbitrary text (`invariants::config`).
#![no_main]

// Each target uses a part of the shared invariants.
#[allow(dead_code)]
#[path = "../../tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        invariants::config(text);
    }
});
