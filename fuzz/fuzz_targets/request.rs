//! The forward proxy's request parser and reader on what an app (or
//! anything on the pod's loopback) sends first (`invariants::request_head`).
#![no_main]

// Each target uses a part of the shared invariants.
#[allow(dead_code)]
#[path = "../../tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() <= 2 * egress_sentinel::forward::request::MAX_HEAD {
        invariants::runtime().block_on(invariants::request_head(data));
    }
});
