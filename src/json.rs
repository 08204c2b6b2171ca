//! JSON strings read in place.
//!
//! serde's `#[serde(borrow)]` borrows a `Cow<str>` only when the field is the
//! `Cow` itself: in an `Option<Cow<str>>` every string was copied into a new
//! allocation, escapes or not (see the test below). Each request's `model`
//! and every streamed chunk's text went through such fields. This newtype
//! carries the borrow through the `Option`.

use std::borrow::Cow;
use std::ops::Deref;

use serde::Deserialize;

/// A JSON string: borrowed from the input unless it had escapes to undo.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct JsonStr<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Deref for JsonStr<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl JsonStr<'_> {
    pub fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct View<'a> {
        #[serde(borrow, default)]
        plain: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        wrapped: Option<JsonStr<'a>>,
    }

    #[test]
    fn an_optional_string_is_borrowed_unless_it_has_escapes() {
        let v: View<'_> = serde_json::from_slice(br#"{"plain":"abc","wrapped":"abc"}"#).unwrap();
        // What the newtype is for: serde copies the plain one.
        assert!(matches!(v.plain, Some(Cow::Owned(_))));
        assert!(matches!(v.wrapped, Some(JsonStr(Cow::Borrowed("abc")))));
        let v: View<'_> = serde_json::from_slice(br#"{"wrapped":"a\"b\u00e9"}"#).unwrap();
        let wrapped = v.wrapped.unwrap();
        assert!(matches!(wrapped.0, Cow::Owned(_)));
        assert_eq!(&*wrapped, "a\"bé");
        let v: View<'_> = serde_json::from_slice(br#"{"wrapped":null}"#).unwrap();
        assert!(v.wrapped.is_none());
    }
}
