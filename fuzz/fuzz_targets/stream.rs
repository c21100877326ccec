//! Arbitrary bytes through the TCP framing (`StreamDecoder`), cut at an arbitrary point to
//! exercise partial reads. Nothing may panic or loop. Run: `cargo fuzz run stream -s none`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipdesk::sip::wire::{Limits, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let cut = (cut as usize).min(data.len());
    let mut decoder = StreamDecoder::new(Limits { max_message_size: 4096, max_headers: 64 });
    for part in [&data[..cut], &data[cut..]] {
        decoder.push(part);
        // Every item consumes bytes, so this ends; the bound guards against a regression.
        for _ in 0..=data.len() {
            match decoder.next_item() {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
});
