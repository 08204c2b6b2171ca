//! A backend with its own name for a model (`backends[].models`) gets that
//! name in the request's `model`; its answers name the public model again, so
//! the client sees the name it asked for. Both are done on the bytes: the
//! request body is spliced at its `model` value, and answers (JSON or SSE) have
//! each `"model": "<backend name>"` replaced as they stream, holding back at
//! most the few bytes of a match cut by a chunk boundary.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct ModelField<'a> {
    #[serde(borrow)]
    model: &'a RawValue,
}

/// `body` with its top-level `model` set to `model`, everything else byte for
/// byte; `None` when the body has no such field (admission checked it has).
pub fn with_model(body: &Bytes, model: &str) -> Option<Bytes> {
    let field: ModelField<'_> = serde_json::from_slice(body).ok()?;
    let raw = field.model.get();
    let start = raw.as_ptr() as usize - body.as_ptr() as usize;
    let end = start + raw.len();
    let mut out = Vec::with_capacity(body.len() + model.len());
    out.extend_from_slice(&body[..start]);
    serde_json::to_writer(&mut out, model).ok()?;
    out.extend_from_slice(&body[end..]);
    Some(out.into())
}

/// `body` with the form value at `span` (a `multipart/form-data` field's
/// content, taken as is by the upstream) replaced by `model`.
pub fn in_form(body: &Bytes, span: std::ops::Range<usize>, model: &str) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + model.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(model.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    out.into()
}

const KEY: &[u8] = b"\"model\"";
/// Whitespace allowed around the colon (OpenAI's JSON answers are indented).
const MAX_SPACE: usize = 16;

/// Replaces `"model": "<from>"` with `"model": "<to>"` in a response body
/// that arrives in chunks.
pub struct ModelRename {
    /// `"<from>"` and `"<to>"`, JSON-encoded.
    from: Vec<u8>,
    to: Vec<u8>,
    /// The start of a possible match cut by the end of the last chunk.
    carry: BytesMut,
}

enum Found {
    /// The value to replace is at `start..end`.
    At {
        start: usize,
        end: usize,
    },
    No,
    /// The data ends before it can tell.
    Cut,
}

impl ModelRename {
    pub fn new(from: &str, to: &str) -> Self {
        let json = |s: &str| serde_json::to_vec(s).expect("strings serialize");
        Self {
            from: json(from),
            to: json(to),
            carry: BytesMut::new(),
        }
    }

    /// Rewrites one body chunk in place (`end`: the last one).
    pub fn on_body(&mut self, body: &mut Option<Bytes>, end: bool) {
        let chunk = body.take().unwrap_or_default();
        let data: Bytes = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(&chunk);
            self.carry.split().freeze()
        };
        let mut out: Option<BytesMut> = None;
        let mut copied = 0;
        let mut at = 0;
        let finder = memchr::memmem::Finder::new(KEY);
        loop {
            let Some(pos) = finder.find(&data[at..]).map(|p| p + at) else {
                // A key cut at the end of the chunk: `"mod`.
                let tail_from = (1..KEY.len())
                    .rev()
                    .find(|&n| data.len() >= n && data.ends_with(&KEY[..n]))
                    .map(|n| data.len() - n);
                if let (Some(from), false) = (tail_from, end) {
                    self.carry.extend_from_slice(&data[from.max(copied)..]);
                    return self.finish(body, out, &data, copied, from.max(copied));
                }
                return self.finish(body, out, &data, copied, data.len());
            };
            match self.value_after(&data, pos + KEY.len()) {
                Found::At {
                    start,
                    end: value_end,
                } => {
                    let buf = out.get_or_insert_with(|| BytesMut::with_capacity(data.len() + 16));
                    buf.extend_from_slice(&data[copied..start]);
                    buf.extend_from_slice(&self.to);
                    copied = value_end;
                    at = value_end;
                }
                Found::No => at = pos + 1,
                Found::Cut if !end => {
                    self.carry.extend_from_slice(&data[pos..]);
                    return self.finish(body, out, &data, copied, pos);
                }
                Found::Cut => return self.finish(body, out, &data, copied, data.len()),
            }
        }
    }

    /// Puts `data[copied..upto]` after what was rewritten into `body`.
    fn finish(
        &self,
        body: &mut Option<Bytes>,
        out: Option<BytesMut>,
        data: &Bytes,
        copied: usize,
        upto: usize,
    ) {
        *body = Some(match out {
            None => data.slice(..upto),
            Some(mut buf) => {
                buf.extend_from_slice(&data[copied..upto]);
                buf.freeze()
            }
        });
    }

    /// After a `"model"` key ending at `i`: spaces, a colon, spaces, then
    /// `from`?
    fn value_after(&self, data: &[u8], mut i: usize) -> Found {
        let skip = |i: &mut usize| {
            let start = *i;
            while data.get(*i).is_some_and(u8::is_ascii_whitespace) {
                *i += 1;
            }
            *i - start <= MAX_SPACE
        };
        if !skip(&mut i) {
            return Found::No;
        }
        match data.get(i) {
            None => return Found::Cut,
            Some(b':') => i += 1,
            Some(_) => return Found::No,
        }
        if !skip(&mut i) {
            return Found::No;
        }
        let rest = &data[i.min(data.len())..];
        let n = rest.len().min(self.from.len());
        if rest[..n] != self.from[..n] {
            Found::No
        } else if n < self.from.len() {
            Found::Cut
        } else {
            Found::At {
                start: i,
                end: i + self.from.len(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut ModelRename, chunks: &[&str]) -> Vec<String> {
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut b = Some(Bytes::copy_from_slice(c.as_bytes()));
                r.on_body(&mut b, i + 1 == chunks.len());
                String::from_utf8(b.unwrap().to_vec()).unwrap()
            })
            .collect()
    }

    #[test]
    fn the_request_body_gets_the_backends_name_and_nothing_else_changes() {
        let body = Bytes::from_static(
            br#"{"messages":[{"role":"user","content":"\"model\":\"gpt-4o\""}], "model" : "gpt-4o","n":1e400}"#,
        );
        let out = with_model(&body, "my-deployment").unwrap();
        assert_eq!(
            &out[..],
            br#"{"messages":[{"role":"user","content":"\"model\":\"gpt-4o\""}], "model" : "my-deployment","n":1e400}"#
        );
        assert!(with_model(&Bytes::from_static(b"{}"), "x").is_none());
    }

    #[test]
    fn answers_name_the_public_model_whatever_the_chunking() {
        let body = "data: {\"id\":\"1\",\"model\":\"dep-1\",\"choices\":[{\"delta\":{\"content\":\"\\\"model\\\":\\\"dep-1\\\"\"}}]}\n\n\
                    data: {\"model\" : \"dep-10\"}\n\n{\n  \"model\": \"dep-1\"\n}";
        let want = "data: {\"id\":\"1\",\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"\\\"model\\\":\\\"dep-1\\\"\"}}]}\n\n\
                    data: {\"model\" : \"dep-10\"}\n\n{\n  \"model\": \"gpt-4o\"\n}";
        // Every split point, in two chunks; and byte by byte.
        for cut in 0..=body.len() {
            let mut r = ModelRename::new("dep-1", "gpt-4o");
            let out = run(&mut r, &[&body[..cut], &body[cut..]]).concat();
            assert_eq!(out, want, "cut at {cut}");
        }
        let bytes: Vec<String> = body.chars().map(String::from).collect();
        let refs: Vec<&str> = bytes.iter().map(String::as_str).collect();
        let mut r = ModelRename::new("dep-1", "gpt-4o");
        assert_eq!(run(&mut r, &refs).concat(), want);
    }

    #[test]
    fn whole_events_are_not_held_back() {
        let mut r = ModelRename::new("dep-1", "gpt-4o");
        let out = run(
            &mut r,
            &[
                "data: {\"model\":\"dep-1\",\"x\":1}\n\n",
                "data: [DONE]\n\n",
            ],
        );
        assert_eq!(out[0], "data: {\"model\":\"gpt-4o\",\"x\":1}\n\n");
    }
}
