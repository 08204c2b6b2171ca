//! Server-sent events read incrementally: the upstream's chunks may split an
//! event (or a line, or a UTF-8 character) at any byte.

use bytes::BytesMut;

#[derive(Default)]
pub(super) struct SseReader {
    /// Bytes not yet split into lines.
    buf: BytesMut,
    /// The `data:` lines of the event being read, joined by `\n`.
    data: Vec<u8>,
    has_data: bool,
}

impl SseReader {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The data of the next complete event, if one has arrived.
    pub(super) fn next_event(&mut self) -> Option<Vec<u8>> {
        while let Some(nl) = memchr::memchr(b'\n', &self.buf) {
            let line = self.buf.split_to(nl + 1);
            let line = &line[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(event) = self.line(line) {
                return Some(event);
            }
        }
        None
    }

    /// At the end of the body: a last event whose blank line never came.
    pub(super) fn finish(&mut self) -> Option<Vec<u8>> {
        if !self.buf.is_empty() {
            let rest = self.buf.split();
            let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
            if let Some(event) = self.line(rest) {
                return Some(event);
            }
        }
        self.line(b"")
    }

    fn line(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                return Some(std::mem::take(&mut self.data));
            }
            return None;
        }
        // `event:`, `id:`, `retry:` and `:` comments carry nothing a Chat
        // Completions stream needs.
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(rest);
            self.has_data = true;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut r = SseReader::default();
        let mut out = Vec::new();
        for c in chunks {
            r.push(c);
            while let Some(e) = r.next_event() {
                out.push(String::from_utf8(e).unwrap());
            }
        }
        out.extend(r.finish().map(|e| String::from_utf8(e).unwrap()));
        out
    }

    #[test]
    fn splits_events_across_chunks_and_line_endings() {
        let all =
            events(&[b"data: {\"a\":1}\n\n: keep-alive\n\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]"]);
        assert_eq!(all, ["{\"a\":1}", "x\ny", "[DONE]"]);
        let body = b"event: x\ndata: one\n\ndata:two\n\n";
        for cut in 0..body.len() {
            assert_eq!(
                events(&[&body[..cut], &body[cut..]]),
                ["one", "two"],
                "{cut}"
            );
        }
    }
}
