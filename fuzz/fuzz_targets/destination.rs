//! The destination parser and the address policy
//! (`invariants::destination_bytes`): the first byte picks `parse_host`,
//! `parse_authority`, `Cidr` or `check_address` on raw addresses.
#![no_main]

// Each target uses a part of the shared invariants.
#[allow(dead_code)]
#[path = "../../tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::destination_bytes(data));
