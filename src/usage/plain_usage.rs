//! The `usage` object at the end of a JSON answer, read without serde when it
//! has the plain shape every provider sends: members whose values are
//! unsigned integers, `null`, booleans, plain ASCII strings or (for the
//! `*_details` members) one level of such members. serde's derive spent ~5k
//! instructions on OpenAI's 230-byte object, a non-streaming request's
//! largest parse (callgrind, benches/README.md); this reads it in a fraction.
//!
//! Anything else (escapes, other nesting, floats, duplicates, a cut body) is
//! not judged here: `None` sends the caller to serde, so what an odd object
//! yields is serde's answer, never a second opinion.

use super::counter::{Details, UsageWire};

/// The members read, in `UsageWire`'s order; each may appear once.
const MEMBERS: [&[u8]; 10] = [
    b"prompt_tokens",
    b"completion_tokens",
    b"input_tokens",
    b"output_tokens",
    b"cache_creation_input_tokens",
    b"cache_read_input_tokens",
    b"prompt_tokens_details",
    b"completion_tokens_details",
    b"input_tokens_details",
    b"output_tokens_details",
];
const DETAIL_MEMBERS: [&[u8]; 2] = [b"cached_tokens", b"reasoning_tokens"];

/// The usage object at the start of `s` (after optional whitespace), if it
/// has the plain shape; what follows it is not looked at.
pub(super) fn plain_usage(s: &[u8]) -> Option<UsageWire> {
    let mut r = Reader { s, at: 0 };
    let mut w = UsageWire::default();
    let mut seen = 0u16;
    r.members(|r, key| {
        let Some(i) = MEMBERS.iter().position(|m| *m == key) else {
            return r.skip_scalar();
        };
        if seen & (1 << i) != 0 {
            return None;
        }
        seen |= 1 << i;
        match i {
            0 => w.prompt_tokens = r.count()?,
            1 => w.completion_tokens = r.count()?,
            2 => w.input_tokens = r.count()?,
            3 => w.output_tokens = r.count()?,
            4 => w.cache_creation_input_tokens = r.count()?,
            5 => w.cache_read_input_tokens = r.count()?,
            6 => w.prompt_tokens_details = r.details()?,
            7 => w.completion_tokens_details = r.details()?,
            8 => w.input_tokens_details = r.details()?,
            _ => w.output_tokens_details = r.details()?,
        }
        Some(())
    })?;
    Some(w)
}

struct Reader<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    /// JSON's whitespace.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// An object whose members `member` reads, given the key (the reader
    /// after the colon).
    fn members(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string of printable ASCII without escapes (serde checks escapes,
    /// control characters and UTF-8; these need none of it). Its contents.
    fn string(&mut self) -> Option<&'a [u8]> {
        (self.peek()? == b'"').then_some(())?;
        let start = self.at + 1;
        let len = memchr::memchr(b'"', &self.s[start..])?;
        let text = &self.s[start..start + len];
        if !text
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) && b != b'\\')
        {
            return None;
        }
        self.at = start + len + 1;
        Some(text)
    }

    /// An unsigned integer in JSON's form (no leading zero) that fits a u64,
    /// or `null`.
    fn count(&mut self) -> Option<Option<u64>> {
        if self.s[self.at..].starts_with(b"null") {
            self.at += 4;
            return Some(None);
        }
        let digits = self.s[self.at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.s[self.at..self.at + digits];
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        // A fraction or exponent makes it a float, which serde refuses for u64.
        if matches!(self.s.get(self.at + digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let n = text.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        self.at += digits;
        Some(Some(n))
    }

    /// A `*_details` object (or `null`).
    fn details(&mut self) -> Option<Option<Details>> {
        if self.s[self.at..].starts_with(b"null") {
            self.at += 4;
            return Some(None);
        }
        let mut d = Details::default();
        let mut seen = 0u8;
        self.members(|r, key| {
            let Some(i) = DETAIL_MEMBERS.iter().position(|m| *m == key) else {
                return r.skip_scalar();
            };
            if seen & (1 << i) != 0 {
                return None;
            }
            seen |= 1 << i;
            let n = r.count()?;
            if i == 0 {
                d.cached_tokens = n;
            } else {
                d.reasoning_tokens = n;
            }
            Some(())
        })?;
        Some(Some(d))
    }

    /// A member the gateway does not read: a count, a literal or a plain string.
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'0'..=b'9' => self.count().map(drop),
            _ => {
                let rest = &self.s[self.at..];
                let len = [&b"true"[..], b"false", b"null"]
                    .into_iter()
                    .find(|lit| rest.starts_with(lit))?
                    .len();
                self.at += len;
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::counter::Usage;
    use rand::{Rng, SeedableRng};

    fn by_serde(s: &[u8]) -> Option<Usage> {
        serde_json::Deserializer::from_slice(s)
            .into_iter::<Usage>()
            .next()?
            .ok()
    }

    #[test]
    fn the_providers_objects_are_read_without_serde_and_as_serde_reads_them() {
        for (object, prompt, completion) in [
            // OpenAI chat, with both details.
            (&br#"{"prompt_tokens":4,"completion_tokens":10,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":2,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default"}"#[..], 4, 10),
            // The Responses API.
            (br#"{ "input_tokens": 36, "input_tokens_details": { "cached_tokens": 0 }, "output_tokens": 87, "output_tokens_details": { "reasoning_tokens": 0 }, "total_tokens": 123 }"#, 36, 87),
            // Anthropic, with the cache beside input_tokens and a null member.
            (b"{\"input_tokens\":10,\n\t\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":7,\"output_tokens\":3,\"service_tier\":\"standard\",\"server_tool_use\":null}", 22, 3),
            (b"{}", 0, 0),
        ] {
            let plain = plain_usage(object).map(Usage::from);
            assert!(plain.is_some(), "{}", String::from_utf8_lossy(object));
            assert_eq!(plain, by_serde(object), "{}", String::from_utf8_lossy(object));
            let u = plain.unwrap();
            assert_eq!((u.prompt_tokens, u.completion_tokens), (prompt, completion));
        }
    }

    #[test]
    fn odd_objects_are_left_to_serde() {
        for odd in [
            &br#"{"prompt_tokens":1,"prompt_tokens":2}"#[..],
            br#"{"prompt_tokens":1.0}"#,
            br#"{"prompt_tokens":1e2}"#,
            br#"{"prompt_tokens":01}"#,
            br#"{"prompt_tokens":-1}"#,
            br#"{"prompt_tokens":18446744073709551616}"#,
            br#"{"prompt_tokens":"4"}"#,
            br#"{"prompt\u005ftokens":4}"#,
            br#"{"note":"a\"b","prompt_tokens":4}"#,
            br#"{"extra":{"a":1},"prompt_tokens":4}"#,
            br#"{"extra":[1,2],"prompt_tokens":4}"#,
            "{\"caf\u{e9}\":1}".as_bytes(),
            b"{\"note\":\"a\nb\"}",
            br#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":1}}"#,
            br#"{"prompt_tokens":4,"completion_tokens""#,
            br#"{"prompt_tokens":4"#,
            b"null",
            b"",
        ] {
            assert!(
                plain_usage(odd).is_none(),
                "{}",
                String::from_utf8_lossy(odd)
            );
        }
    }

    /// Random objects built from the pieces providers and odd peers send:
    /// wherever the plain reader answers, serde answers the same.
    #[test]
    fn wherever_the_plain_reader_answers_serde_agrees() {
        let keys = [
            "prompt_tokens",
            "completion_tokens",
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
            "input_tokens_details",
            "output_tokens_details",
            "cached_tokens",
            "reasoning_tokens",
            "total_tokens",
            "audio_tokens",
            "",
            "caf\u{e9}",
            "a\\\"b",
        ];
        let scalars = [
            "0",
            "7",
            "42",
            "01",
            "-3",
            "2.5",
            "1e3",
            "18446744073709551615",
            "18446744073709551616",
            "null",
            "true",
            "false",
            "\"x\"",
            "\"a\\nb\"",
            "\"\u{e9}\"",
            "\"tab\tin\"",
            "[1]",
            "nul",
        ];
        let ws = ["", " ", "\n", "\t", "\r\n  "];
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let mut plain_answers = 0;
        for _ in 0..20_000 {
            let object = |rng: &mut rand::rngs::StdRng, depth: u32| {
                let mut s = String::from("{");
                for m in 0..rng.gen_range(0..7) {
                    if m > 0 {
                        s.push(',');
                    }
                    s.push_str(ws[rng.gen_range(0..ws.len())]);
                    s.push_str(&format!("\"{}\"", keys[rng.gen_range(0..keys.len())]));
                    s.push_str(ws[rng.gen_range(0..ws.len())]);
                    s.push(':');
                    s.push_str(ws[rng.gen_range(0..ws.len())]);
                    if depth == 0 && rng.gen_bool(0.3) {
                        let mut inner = String::from("{");
                        for n in 0..rng.gen_range(0..4) {
                            if n > 0 {
                                inner.push(',');
                            }
                            let k = keys[rng.gen_range(10..keys.len())];
                            let v = scalars[rng.gen_range(0..scalars.len())];
                            inner.push_str(&format!("\"{k}\":{v}"));
                        }
                        inner.push('}');
                        s.push_str(&inner);
                    } else {
                        s.push_str(scalars[rng.gen_range(0..scalars.len())]);
                    }
                }
                s.push_str(ws[rng.gen_range(0..ws.len())]);
                s.push('}');
                s
            };
            let mut text = object(&mut rng, 0);
            if rng.gen_bool(0.1) {
                let mut cut = rng.gen_range(0..=text.len());
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            text.push_str(",\"service_tier\":\"default\"}");
            let bytes = text.as_bytes();
            if let Some(w) = plain_usage(bytes) {
                plain_answers += 1;
                assert_eq!(Some(Usage::from(w)), by_serde(bytes), "{text}");
            }
        }
        // The plain reader must be what answers most such objects.
        assert!(plain_answers > 2_000, "{plain_answers}");
    }
}
