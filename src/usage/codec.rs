//! The ledger's record encoding: fixed-width little-endian numbers, then
//! length-prefixed strings, written straight into the segment's mapping.
//!
//! Why not JSON (the first format, still read from segments that carry the
//! old magic): serializing a record to JSON cost ~6,200 instructions per
//! request and made the payload (and so its checksum) about twice as long.
//! This encoding is a length sum and a handful of copies, with no allocation.

use std::borrow::Cow;

use super::{UsageRecord, UsageSource};

/// First byte of every payload, so a later layout can be told apart.
const VERSION: u8 = 1;

const HAS_KEY: u8 = 1;
const HAS_USER: u8 = 1 << 1;
const HAS_TTFB: u8 = 1 << 2;
const STREAM: u8 = 1 << 3;

/// `u32::MAX` as a string length: the field is `None`.
const ABSENT: u32 = u32::MAX;

/// version, flags, source, status, then 12 eight-byte numbers.
const FIXED: usize = 1 + 1 + 1 + 2 + 12 * 8;

fn strings(r: &UsageRecord) -> [Option<&str>; 7] {
    [
        Some(r.request_id.as_str()),
        Some(r.endpoint.as_ref()),
        r.model.as_deref(),
        r.model_raw.as_deref(),
        r.backend.as_deref(),
        r.served_model.as_deref(),
        r.error_code.as_deref(),
    ]
}

/// Bytes `encode` writes for `r`.
pub fn encoded_len(r: &UsageRecord) -> usize {
    FIXED
        + strings(r)
            .iter()
            .map(|s| 4 + s.map_or(0, str::len))
            .sum::<usize>()
}

/// Writes `r` into `out`, which is exactly `encoded_len(r)` bytes long.
pub fn encode(r: &UsageRecord, out: &mut [u8]) {
    let mut w = Writer { out, at: 0 };
    let flags = (r.key_id.is_some() as u8 * HAS_KEY)
        | (r.user_id.is_some() as u8 * HAS_USER)
        | (r.ttfb_ms.is_some() as u8 * HAS_TTFB)
        | (r.stream as u8 * STREAM);
    let source = match r.usage_source {
        UsageSource::Upstream => 0,
        UsageSource::Tokenizer => 1,
        UsageSource::None => 2,
        UsageSource::Estimate => 3,
    };
    w.put(&[VERSION, flags, source]);
    w.put(&r.status.to_le_bytes());
    for n in [
        r.created_at,
        r.key_id.unwrap_or(0),
        r.user_id.unwrap_or(0),
        r.cost_nanousd,
    ] {
        w.put(&n.to_le_bytes());
    }
    for n in [
        r.prompt_tokens,
        r.completion_tokens,
        r.cached_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
        r.latency_ms,
        r.ttfb_ms.unwrap_or(0),
    ] {
        w.put(&n.to_le_bytes());
    }
    // Reserved, so a later number needs no new version.
    w.put(&0u64.to_le_bytes());
    for s in strings(r) {
        match s {
            Some(s) => {
                w.put(&(s.len() as u32).to_le_bytes());
                w.put(s.as_bytes());
            }
            None => w.put(&ABSENT.to_le_bytes()),
        }
    }
    debug_assert_eq!(w.at, w.out.len(), "encoded_len and encode disagree");
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

/// The record in `payload`, or why it is not one.
pub fn decode(payload: &[u8]) -> Result<UsageRecord, String> {
    let mut r = Reader { rest: payload };
    let [version, flags, source] = r.array::<3>()?;
    if version != VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let usage_source = match source {
        0 => UsageSource::Upstream,
        1 => UsageSource::Tokenizer,
        2 => UsageSource::None,
        3 => UsageSource::Estimate,
        n => return Err(format!("unknown usage source {n}")),
    };
    let status = u16::from_le_bytes(r.array()?);
    let created_at = r.i64()?;
    let key_id = r.i64()?;
    let user_id = r.i64()?;
    let cost_nanousd = r.i64()?;
    let [prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, latency_ms, ttfb_ms, _reserved] =
        [(); 8].map(|()| r.u64());
    let request_id = r.string()?.ok_or("no request id")?;
    let endpoint = r.string()?.ok_or("no endpoint")?;
    let model = r.string()?;
    let model_raw = r.string()?;
    let backend = r.string()?;
    let served_model = r.string()?;
    let error_code = r.string()?;
    if !r.rest.is_empty() {
        return Err(format!("{} bytes after the record", r.rest.len()));
    }
    Ok(UsageRecord {
        request_id,
        created_at,
        key_id: (flags & HAS_KEY != 0).then_some(key_id),
        user_id: (flags & HAS_USER != 0).then_some(user_id),
        endpoint: Cow::Owned(endpoint),
        model,
        model_raw,
        backend,
        status,
        stream: flags & STREAM != 0,
        prompt_tokens: prompt_tokens?,
        completion_tokens: completion_tokens?,
        cached_tokens: cached_tokens?,
        cache_write_tokens: cache_write_tokens?,
        reasoning_tokens: reasoning_tokens?,
        served_model,
        usage_source,
        cost_nanousd,
        latency_ms: latency_ms?,
        ttfb_ms: if flags & HAS_TTFB != 0 {
            Some(ttfb_ms?)
        } else {
            None
        },
        error_code,
    })
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.rest.len() < n {
            return Err("record cut short".into());
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn i64(&mut self) -> Result<i64, String> {
        self.array().map(i64::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    fn string(&mut self) -> Result<Option<String>, String> {
        let len = u32::from_le_bytes(self.array()?);
        if len == ABSENT {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| "a string that is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(optional: bool) -> UsageRecord {
        UsageRecord {
            request_id: "req_0123456789abcdef0123456789abcdef".into(),
            created_at: 1_765_000_000_123,
            key_id: optional.then_some(7),
            user_id: optional.then_some(-3),
            endpoint: "/v1/chat/completions".into(),
            model: optional.then(|| "gpt-4o".into()),
            model_raw: optional.then(|| "gpt-4o\u{e9}\u{1F600}".into()),
            backend: optional.then(|| "http://127.0.0.1:9/v1".into()),
            status: 200,
            stream: optional,
            prompt_tokens: 12,
            completion_tokens: u64::MAX,
            cached_tokens: 3,
            cache_write_tokens: 4,
            reasoning_tokens: 5,
            served_model: optional.then(|| "gpt-4o-2024-08-06".into()),
            usage_source: if optional {
                UsageSource::Tokenizer
            } else {
                UsageSource::None
            },
            cost_nanousd: i64::MIN,
            latency_ms: 17,
            ttfb_ms: optional.then_some(0),
            error_code: optional.then(|| "upstream_timeout".into()),
        }
    }

    fn encoded(r: &UsageRecord) -> Vec<u8> {
        let mut buf = vec![0; encoded_len(r)];
        encode(r, &mut buf);
        buf
    }

    #[test]
    fn every_field_reads_back_as_written() {
        for optional in [true, false] {
            let r = record(optional);
            assert_eq!(decode(&encoded(&r)).unwrap(), r);
        }
    }

    #[test]
    fn a_cut_or_damaged_payload_is_an_error_not_a_panic() {
        let bytes = encoded(&record(true));
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        // Every single-byte change either fails or reads as some record.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = decode(&b);
        }
    }
}
