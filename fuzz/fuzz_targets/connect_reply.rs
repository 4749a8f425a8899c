//! The CONNECT reply reader fed a hostile proxy's bytes from an in-memory
//! duplex (`invariants::connect_reply`). The first byte is the size of the
//! pieces the proxy writes in, the rest is what it writes.
#![no_main]

// Each target uses a part of the shared invariants.
#[allow(dead_code)]
#[path = "../../tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&chunk, reply)) = data.split_first() else {
        return;
    };
    // Twice what the reader may take, so oversized heads are reached.
    if reply.len() <= 2 * egress_sentinel::dial::connect::MAX_REPLY {
        invariants::runtime().block_on(invariants::connect_reply(reply, usize::from(chunk)));
    }
});
