//! The response counter on any upstream answer, cut into chunks where the
//! input says: never panics, counts every byte it was given, and never
//! forwards more bytes than it received.
#![no_main]

use bluesminds::usage::counter::ResponseCounter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let content_type = match flags & 3 {
        0 => Some("text/event-stream"),
        1 => Some("application/json"),
        2 => Some("text/event-stream; charset=utf-8"),
        _ => None,
    };
    let strip = flags & 4 != 0;
    let abort = flags & 8 != 0;
    // The first bytes of the rest choose the chunk sizes (1..=64 each).
    let (sizes, body) = rest.split_at(rest.len().min(8));
    let mut counter = ResponseCounter::new(content_type, strip);
    let mut fed = 0;
    let mut forwarded = 0;
    let mut at = 0;
    let mut i = 0;
    while at < body.len() {
        let n = (usize::from(sizes.get(i % sizes.len().max(1)).copied().unwrap_or(16)) % 64 + 1)
            .min(body.len() - at);
        let mut chunk = Some(bytes::Bytes::copy_from_slice(&body[at..at + n]));
        at += n;
        i += 1;
        fed += n;
        counter.on_body(&mut chunk, false);
        forwarded += chunk.map_or(0, |c| c.len());
    }
    if abort {
        counter.on_abort();
    } else {
        let mut end = None;
        counter.on_body(&mut end, true);
        forwarded += end.map_or(0, |c| c.len());
    }
    assert_eq!(counter.bytes_seen(), fed);
    assert!(forwarded <= fed, "forwarded {forwarded} of {fed}");
    let _ = counter.usage();
    let _ = counter.reply_text();
});
