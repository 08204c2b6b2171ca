//! The fields of a `multipart/form-data` body the gateway routes by: OpenAI's
//! audio uploads (`/v1/audio/transcriptions`, `/v1/audio/translations`) name
//! their model in a form field, beside the file. The body is already read and
//! bounded by `proxy.max_body_bytes`; it goes upstream byte for byte, so only
//! the small text parts are looked at and the file part is skipped over.
//!
//! Written by hand (RFC 7578 on RFC 2046's framing) because no multipart crate
//! is in the build, and because the gateway needs the byte span of the
//! `model` value to rename it per backend. It fails closed: a form it cannot
//! read, a `model` given twice (the gateway would route by one and the upstream
//! serve the other) or a routing field it would have to remove is refused.

use std::ops::Range;

use crate::error::GatewayError;

use super::request::ROUTING_FIELDS;

/// What the gateway reads from a form.
#[derive(Debug, PartialEq, Eq)]
pub struct Form {
    pub model: String,
    /// Where the model's value is in the body (to put a backend's name there).
    pub model_span: Range<usize>,
    pub stream: bool,
    /// A field of `ROUTING_FIELDS`, if the form has one.
    pub routing_field: Option<&'static str>,
}

fn malformed(detail: &str) -> GatewayError {
    GatewayError::invalid(
        format!("We could not parse the multipart/form-data body of your request: {detail}."),
        None,
    )
}

/// The boundary of a `multipart/form-data` content type.
fn boundary(content_type: Option<&str>) -> Result<&str, GatewayError> {
    let not_form = || {
        GatewayError::invalid(
            "This endpoint takes a multipart/form-data body (a file and its fields, `model` among them).",
            None,
        )
    };
    let content_type = content_type.ok_or_else(not_form)?;
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or_default().trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(not_form());
    }
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            // RFC 2046 section 5.1.1: 1 to 70 characters.
            if value.is_empty() || value.len() > 70 {
                return Err(malformed("the boundary must be 1 to 70 characters"));
            }
            return Ok(value);
        }
    }
    Err(malformed("the content type has no boundary"))
}

/// The `name` parameter of a part's `Content-Disposition: form-data` header.
/// Parameters are split outside quoted strings, so a file name holding
/// `; name="model"` is not taken for the field's name. What parsers may read
/// differently is refused, since the upstream's reading must be the
/// gateway's: a second `Content-Disposition`, a second `name`, or an
/// RFC 5987 `name*` (some take the last of each, some decode `name*`), or
/// a transfer encoding.
fn field_name(headers: &[u8]) -> Result<Option<String>, GatewayError> {
    let headers =
        std::str::from_utf8(headers).map_err(|_| malformed("a part header is not UTF-8"))?;
    let mut found: Option<Option<String>> = None;
    for line in headers.split("\r\n").filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed("a part header has no colon"));
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-transfer-encoding") {
            // Some parsers decode base64 or quoted-printable parts: the
            // gateway would route by the encoded text.
            let plain = ["7bit", "8bit", "binary"];
            if !plain.iter().any(|p| value.trim().eq_ignore_ascii_case(p)) {
                return Err(malformed("a part has a Content-Transfer-Encoding"));
            }
            continue;
        }
        if !name.eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        if found.is_some() {
            return Err(malformed("a part has two Content-Disposition headers"));
        }
        let mut params = split_params(value)?.into_iter();
        if !params
            .next()
            .is_some_and(|(kind, _)| kind.eq_ignore_ascii_case("form-data"))
        {
            return Err(malformed("a part is not form-data"));
        }
        let mut field = None;
        for (key, value) in params {
            if key.eq_ignore_ascii_case("name*") {
                return Err(malformed("a part is named with `name*`; use `name`"));
            }
            if key.eq_ignore_ascii_case("name") && field.replace(value).is_some() {
                return Err(malformed("a part has two names"));
            }
        }
        found = Some(field);
    }
    Ok(found.flatten())
}

/// `form-data; name="a"; filename="b"` as `(key, unquoted value)` pairs, the
/// first with an empty value.
fn split_params(value: &str) -> Result<Vec<(String, String)>, GatewayError> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == ';' || c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => val.push(c),
                            None => return Err(malformed("a quoted parameter is not closed")),
                        },
                        Some(c) => val.push(c),
                        None => return Err(malformed("a quoted parameter is not closed")),
                    }
                }
                while chars.peek().is_some_and(|c| *c != ';') {
                    if !chars.next().is_some_and(|c| c.is_ascii_whitespace()) {
                        return Err(malformed("text follows a quoted parameter"));
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
                val = val.trim().to_string();
            }
        }
        out.push((key.trim().to_string(), val));
        if chars.next().is_none() {
            return Ok(out);
        }
    }
}

/// Reads the routing fields of a `multipart/form-data` body.
pub fn read(content_type: Option<&str>, body: &[u8]) -> Result<Form, GatewayError> {
    let boundary = boundary(content_type)?;
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let finder = memchr::memmem::Finder::new(next_delimiter.as_bytes());
    // The first delimiter opens the body or follows a preamble's CRLF.
    let mut at = if body.starts_with(delimiter.as_bytes()) {
        delimiter.len()
    } else {
        finder
            .find(body)
            .map(|p| p + next_delimiter.len())
            .ok_or_else(|| malformed("the boundary does not occur in the body"))?
    };
    let mut model: Option<(String, Range<usize>)> = None;
    let mut stream = false;
    let mut routing_field = None;
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            break;
        }
        // Transport padding (RFC 2046): whitespace before the line's CRLF.
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| malformed("the body ends inside a delimiter line"))?;
        if !rest[..line_end].iter().all(|b| *b == b' ' || *b == b'\t') {
            return Err(malformed("a delimiter line has text after the boundary"));
        }
        let part_start = at + line_end + 2;
        let part = &body[part_start..];
        let (headers, content_start) = if part.starts_with(b"\r\n") {
            (&part[..0], part_start + 2)
        } else {
            let end = memchr::memmem::find(part, b"\r\n\r\n")
                .ok_or_else(|| malformed("a part's headers do not end"))?;
            (&part[..end], part_start + end + 4)
        };
        let content_end = finder
            .find(&body[content_start..])
            .map(|p| content_start + p)
            .ok_or_else(|| malformed("the closing boundary is missing"))?;
        let value = &body[content_start..content_end];
        match field_name(headers)?.as_deref() {
            Some("model") => {
                if model.is_some() {
                    return Err(GatewayError::invalid(
                        "The form gives `model` more than once.",
                        Some("model"),
                    ));
                }
                let text = std::str::from_utf8(value).map_err(|_| {
                    GatewayError::invalid("The form's `model` is not UTF-8 text.", Some("model"))
                })?;
                model = Some((text.to_string(), content_start..content_end));
            }
            Some("stream") => stream = value.eq_ignore_ascii_case(b"true"),
            Some(name) => {
                if let Some(field) = ROUTING_FIELDS.iter().find(|f| **f == name) {
                    routing_field.get_or_insert(*field);
                }
            }
            None => {}
        }
        at = content_end + next_delimiter.len();
    }
    match model {
        Some((model, model_span)) if !model.trim().is_empty() => Ok(Form {
            model,
            model_span,
            stream,
            routing_field,
        }),
        _ => Err(GatewayError::invalid(
            "you must provide a model parameter",
            Some("model"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn form(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (disposition, value) in parts {
            out.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    fn param(e: GatewayError) -> Option<&'static str> {
        match e {
            GatewayError::InvalidRequest { param, .. } => param,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn finds_the_model_beside_a_file() {
        let body = form(&[
            (
                r#"form-data; name="file"; filename="a; name=\"model\".mp3""#,
                "\r\n--Xy\0\u{1}binary",
            ),
            ("form-data; name=\"model\"", "whisper-1"),
            ("form-data; name=stream", "true"),
        ]);
        let f = read(Some(CT), &body).unwrap();
        assert_eq!(f.model, "whisper-1");
        assert_eq!(&body[f.model_span.clone()], b"whisper-1");
        assert!(f.stream);
        assert_eq!(f.routing_field, None);
    }

    #[test]
    fn quoted_boundary_preamble_and_header_case() {
        let body = b"preamble\r\n--a b\r\ncontent-disposition: FORM-DATA; NAME=\"model\"\r\ncontent-type: text/plain\r\n\r\ngpt-4o-transcribe\r\n--a b--";
        let f = read(
            Some("Multipart/Form-Data; charset=utf-8; boundary=\"a b\""),
            body,
        )
        .unwrap();
        assert_eq!(f.model, "gpt-4o-transcribe");
    }

    #[test]
    fn a_missing_or_empty_or_doubled_model_is_refused_naming_it() {
        for body in [
            form(&[("form-data; name=\"file\"; filename=\"a.mp3\"", "x")]),
            form(&[("form-data; name=\"model\"", "  ")]),
            form(&[
                ("form-data; name=\"model\"", "cheap"),
                ("form-data; name=\"model\"", "dear"),
            ]),
            // `filename` is not `name`.
            form(&[("form-data; filename=\"model\"", "m")]),
        ] {
            let e = read(Some(CT), &body).unwrap_err();
            assert_eq!(e.status(), 400);
            assert_eq!(param(e), Some("model"));
        }
    }

    #[test]
    fn routing_fields_are_seen() {
        let body = form(&[
            ("form-data; name=\"model\"", "m"),
            ("form-data; name=\"api_base\"", "http://evil"),
        ]);
        assert_eq!(
            read(Some(CT), &body).unwrap().routing_field,
            Some("api_base")
        );
    }

    #[test]
    fn bodies_that_are_not_forms_are_refused() {
        let good = form(&[("form-data; name=\"model\"", "m")]);
        let cut = &good[..good.len() - 12];
        for (ct, body) in [
            (None, &good[..]),
            (Some("application/json"), &good[..]),
            (Some("multipart/form-data"), &good[..]),
            (Some("multipart/form-data; boundary=other"), &good[..]),
            (Some(CT), cut),
            (
                Some(CT),
                b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n",
            ),
            (
                Some(CT),
                b"--XyZ\r\nContent-Disposition: form-data; name=\"model\r\n\r\nm\r\n--XyZ--",
            ),
            (Some(CT), b"--XyZ\r\nno colon\r\n\r\nm\r\n--XyZ--"),
            // Read differently by other parsers: refused, not guessed.
            (
                Some(CT),
                b"--XyZ\r\nContent-Disposition: form-data; name=\"language\"\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--XyZ--",
            ),
            (
                Some(CT),
                b"--XyZ\r\nContent-Disposition: form-data; name=\"language\"; name=\"model\"\r\n\r\nm\r\n--XyZ--",
            ),
            (
                Some(CT),
                b"--XyZ\r\nContent-Disposition: form-data; name*=utf-8''model\r\n\r\nm\r\n--XyZ--",
            ),
            (
                Some(CT),
                b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\nContent-Transfer-Encoding: base64\r\n\r\nbQ==\r\n--XyZ--",
            ),
        ] {
            let e = read(ct, body).unwrap_err();
            assert_eq!(
                e.status(),
                400,
                "{ct:?} {:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(param(e), None, "{ct:?} {:?}", String::from_utf8_lossy(body));
        }
    }

    /// Cut or altered forms never panic (slicing at computed offsets).
    #[test]
    fn truncations_and_edits_never_panic() {
        let body = form(&[
            ("form-data; name=\"file\"; filename=\"a\"", "abc"),
            ("form-data; name=\"model\"", "m"),
        ]);
        for n in 0..body.len() {
            let _ = read(Some(CT), &body[..n]);
            for byte in [b'\r', b'\n', b'-', b'"', b';', b'\\', b'=', 0xff] {
                let mut edited = body.clone();
                edited[n] = byte;
                let _ = read(Some(CT), &edited);
            }
        }
    }
}
