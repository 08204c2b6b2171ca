//! Checks that run while a field is deserialized (`#[serde(deserialize_with)]`),
//! so their errors carry the field's path and line like any type error; and
//! `line_of`, which finds the line of the few cross-field errors found later.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

fn refuse<'de, D: Deserializer<'de>, T>(message: impl std::fmt::Display) -> Result<T, D::Error> {
    Err(de::Error::custom(message))
}

const ZERO_LIMIT: &str = "a limit of 0 would refuse everything; leave it out for unlimited";

/// An optional limit: absent is unlimited, 0 is a mistake.
pub fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(0) => refuse::<D, _>(ZERO_LIMIT),
        v => Ok(v),
    }
}

pub fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => refuse::<D, _>("must be at least 1"),
        n => Ok(n),
    }
}

pub fn at_least_one_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => refuse::<D, _>("must be at least 1"),
        n => Ok(n),
    }
}

pub fn at_least_one_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        0 => refuse::<D, _>("must be at least 1"),
        n => Ok(n),
    }
}

pub fn trusted_proxies<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<crate::client_ip::TrustedProxies, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    crate::client_ip::TrustedProxies::parse(items.iter().map(|s| s.trim()))
        .or_else(|e| refuse::<D, _>(e))
}

pub fn body_limit<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 || n > super::MAX_BODY_LIMIT {
        return refuse::<D, _>(format!("must be between 1 and {}", super::MAX_BODY_LIMIT));
    }
    Ok(n)
}

pub fn millis_50_to_60000<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if !(50..=60_000).contains(&n) {
        return refuse::<D, _>("must be between 50 and 60000");
    }
    Ok(n)
}

pub fn sync_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if !(10..=5000).contains(&n) {
        return refuse::<D, _>("must be between 10 and 5000");
    }
    Ok(n)
}

/// `10.96.0.10` (port 53) or `127.0.0.1:5353`.
pub fn name_servers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<std::net::SocketAddr>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<std::net::SocketAddr>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .or_else(|_| {
                    refuse::<D, _>(format!(
                        "`{s}` is not an IP address or IP:port (name servers are given by address)"
                    ))
                })
        })
        .collect()
}

pub fn absolute_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !s.starts_with('/') {
        return refuse::<D, _>("must start with /");
    }
    Ok(s)
}

pub fn database_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| s.starts_with(p))
    {
        return refuse::<D, _>("must start with sqlite:, postgres:// or postgresql://");
    }
    Ok(s)
}

pub fn redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
        return refuse::<D, _>("must start with redis:// or rediss://");
    }
    Ok(s)
}

pub fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return refuse::<D, _>("must not be empty");
    }
    Ok(s)
}

pub fn model_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let models = Vec::<String>::deserialize(d)?;
    if models.is_empty() {
        return refuse::<D, _>("a pool must serve at least one model");
    }
    if let Some(m) = models.iter().find(|m| m.trim().is_empty()) {
        return refuse::<D, _>(format!("invalid model name `{m}`"));
    }
    Ok(models)
}

pub fn non_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let items = Vec::<T>::deserialize(d)?;
    if items.is_empty() {
        return refuse::<D, _>("a pool needs at least one backend");
    }
    Ok(items)
}

pub(super) fn env_value(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// The name of an environment variable that must be set (a backend's key).
pub fn set_env_var<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let var = Option::<String>::deserialize(d)?;
    match &var {
        Some(v) if env_value(v).is_none() => {
            refuse::<D, _>(format!("environment variable `{v}` is not set"))
        }
        _ => Ok(var),
    }
}

/// The variable holding the admin token, which must be long enough to resist guessing.
pub fn token_env_var<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let var = Option::<String>::deserialize(d)?;
    match &var {
        Some(v) if env_value(v).is_none_or(|t| t.len() < 16) => refuse::<D, _>(format!(
            "environment variable `{v}` must hold a token of at least 16 characters"
        )),
        _ => Ok(var),
    }
}

/// An HTTP header name, lowercased, or `null`.
pub fn optional_header_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(n) => match http::HeaderName::from_bytes(n.trim().as_bytes()) {
            Ok(name) => Ok(Some(name.as_str().to_string())),
            Err(_) => refuse::<D, _>(format!("`{n}` is not a header name")),
        },
    }
}

/// HTTP header names, lowercased.
pub fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .into_iter()
        .map(
            |n| match http::HeaderName::from_bytes(n.trim().as_bytes()) {
                Ok(name) => Ok(name.as_str().to_string()),
                Err(_) => refuse::<D, _>(format!("`{n}` is not a header name")),
            },
        )
        .collect()
}

pub fn price<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let p = f64::deserialize(d)?;
    if !(p.is_finite() && p >= 0.0) {
        return refuse::<D, _>("prices must be finite and not negative");
    }
    Ok(p)
}

pub fn optional_price<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let p = Option::<f64>::deserialize(d)?;
    if p.is_some_and(|p| !(p.is_finite() && p >= 0.0)) {
        return refuse::<D, _>("prices must be finite and not negative");
    }
    Ok(p)
}

pub fn credits<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let c = Option::<f64>::deserialize(d)?;
    if c.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        return refuse::<D, _>("must be a positive amount");
    }
    Ok(c)
}

/// The line of the value at `path` (`pools[0].backends[1].url`, `plans.pro`),
/// found by the YAML parser itself: the document is walked down that path and
/// the walk fails on purpose when it arrives, so the parser's error carries
/// the position. Keys may contain dots (`prices.gpt-3.5-turbo`).
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match (Seek { rest: path }).deserialize(de) {
        Err(e) => e.location().map(|l| l.line()),
        Ok(()) => None,
    }
}

struct Seek<'a> {
    rest: &'a str,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // At the target every visit fails (Visitor's defaults), with the position.
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the field being looked for")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.rest.is_empty() {
            return Err(de::Error::custom("found"));
        }
        while let Some(key) = map.next_key::<String>()? {
            let after = self.rest.strip_prefix(key.as_str()).filter(|after| {
                after.is_empty() || after.starts_with('.') || after.starts_with('[')
            });
            match after {
                Some(after) => {
                    let rest = after.strip_prefix('.').unwrap_or(after);
                    return map.next_value_seed(Seek { rest });
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((index, after)) = self
            .rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(i, after)| Some((i.parse::<usize>().ok()?, after)))
        else {
            return Err(de::Error::custom("found"));
        };
        let rest = after.strip_prefix('.').unwrap_or(after);
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Seek { rest }).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::line_of;

    #[test]
    fn finds_keys_list_items_and_dotted_names() {
        let text = "a: 1\npools:\n  - name: x\n  - name: y\n    weight: 2\nprices:\n  gpt-3.5-turbo: {in: 1}\n";
        assert_eq!(line_of(text, "pools[1].weight"), Some(5));
        assert_eq!(line_of(text, "pools[1]"), Some(4));
        assert_eq!(line_of(text, "prices.gpt-3.5-turbo"), Some(7));
        assert_eq!(line_of(text, "a"), Some(1));
        assert_eq!(line_of(text, "missing"), None);
    }
}
