//! Arbitrary bytes, fed in arbitrary chunks, must never make the frame decoder
//! panic or buffer more than its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::FrameDecoder;

const CAP: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut dec = FrameDecoder::new(protocol::Limits::uniform(CAP));
    for piece in rest.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_envelope() {
                // Whatever parses must serialize again.
                Ok(Some(env)) => drop(protocol::encode_frame(&env, usize::MAX)),
                Ok(None) => break,
                Err(protocol::Error::Oversized { .. }) => return,
                Err(_) => continue,
            }
        }
        // Only a partial frame may remain.
        assert!(dec.buffered() < CAP + protocol::FRAME_HEADER_BYTES + 1);
    }
});
