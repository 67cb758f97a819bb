//! JSON read without building a tree. A [`JsonObject`] holds each field's
//! raw text (serde_json's [`RawValue`], borrowed from the message bytes),
//! found by name; a [`Json`] is one such value, read as the type a field
//! needs. Decoding reads a dozen named fields per document once each: a
//! `serde_json::Value` allocated a string per key and per value and a map
//! node per field only to drop them again, and that was most of decoding.
//!
//! serde_json still checks the whole text (syntax, UTF-8, escapes) while it
//! finds each value's extent, so every raw value here is well-formed JSON,
//! and the text of a number is exactly as written (decimals stay exact).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One JSON value, as its raw text.
#[derive(Clone, Copy, Debug)]
pub struct Json<'a>(&'a str);

impl<'a> Json<'a> {
    fn of(raw: &'a RawValue) -> Self {
        Json(raw.get())
    }

    /// The value's JSON text, as written.
    pub fn text(self) -> &'a str {
        self.0
    }

    /// The first byte says the type: serde_json hands over a value's text
    /// without surrounding whitespace.
    fn first(self) -> u8 {
        self.0.as_bytes().first().copied().unwrap_or(b'n')
    }

    pub fn is_null(self) -> bool {
        self.first() == b'n'
    }

    /// "a string", "an object", … for error messages.
    pub fn type_name(self) -> &'static str {
        match self.first() {
            b'n' => "null",
            b't' | b'f' => "a boolean",
            b'"' => "a string",
            b'[' => "an array",
            b'{' => "an object",
            _ => "a number",
        }
    }

    pub fn as_bool(self) -> Option<bool> {
        match self.0 {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// A number's text, exactly as written (e.g. `2.50`, `1e3`).
    pub fn as_number(self) -> Option<&'a str> {
        matches!(self.first(), b'-' | b'0'..=b'9').then_some(self.0)
    }

    /// A string's contents, unescaped; borrowed unless it has escapes.
    pub fn as_str(self) -> Option<Cow<'a, str>> {
        if self.first() != b'"' {
            return None;
        }
        let inner = &self.0[1..self.0.len() - 1];
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner));
        }
        // Well-formed (serde_json checked it), so this only unescapes.
        serde_json::from_str::<String>(self.0).ok().map(Cow::Owned)
    }

    /// An array's elements.
    pub fn as_array(self) -> Option<Vec<Json<'a>>> {
        if self.first() != b'[' {
            return None;
        }
        let elements: Vec<&'a RawValue> = serde_json::from_str(self.0).ok()?;
        Some(elements.into_iter().map(Json::of).collect())
    }

    /// An object's fields.
    pub fn as_object(self) -> Option<JsonObject<'a>> {
        if self.first() != b'{' {
            return None;
        }
        JsonObject::parse_str(self.0).ok()
    }
}

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A JSON object's fields by name, each a raw [`Json`] value. A name given
/// twice takes its last value, as `serde_json::Value` did.
#[derive(Debug, Default)]
pub struct JsonObject<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// Why bytes are not a JSON object.
#[derive(Debug)]
pub enum NotAnObject {
    /// Not JSON at all: serde_json's description, with line and column.
    Invalid(serde_json::Error),
    /// Valid JSON of another type ("an array", "a number", …).
    OtherType(&'static str),
}

impl<'a> JsonObject<'a> {
    /// Reads `bytes` as one JSON object (surrounding whitespace allowed).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, NotAnObject> {
        // UTF-8 is checked once here: serde_json would check each raw value
        // it borrows from a byte slice again, and the lines once more.
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse_str(text),
            // The error serde_json gives for the bytes (with line and column).
            Err(_) => Err(NotAnObject::Invalid(
                serde_json::from_slice::<serde_json::Value>(bytes)
                    .err()
                    .unwrap_or_else(|| de::Error::custom("invalid UTF-8")),
            )),
        }
    }

    fn parse_str(text: &'a str) -> Result<Self, NotAnObject> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        match deserializer
            .deserialize_map(ObjectVisitor)
            .and_then(|object| deserializer.end().map(|()| object))
        {
            Ok(object) => Ok(object),
            // serde_json says "invalid type" before reading a non-object, so
            // whether it is valid JSON at all takes a second look (rare).
            Err(error) if error.is_data() => Err(match serde_json::from_str::<IgnoredAny>(text) {
                Err(invalid) => NotAnObject::Invalid(invalid),
                Ok(_) => NotAnObject::OtherType(Json(text.trim_start()).type_name()),
            }),
            Err(error) => Err(NotAnObject::Invalid(error)),
        }
    }

    /// The field's value, if present (a JSON `null` included).
    pub fn get(&self, name: &str) -> Option<Json<'a>> {
        self.fields
            .iter()
            .rev()
            .find(|(field, _)| field == name)
            .map(|(_, raw)| Json::of(raw))
    }

    /// The field's value, treating JSON `null` as absent.
    pub fn present(&self, name: &str) -> Option<Json<'a>> {
        self.get(name).filter(|value| !value.is_null())
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The names of the fields, in order (a repeated name more than once).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(name, _)| name.as_ref())
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = JsonObject<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(12));
        while let Some(name) = map.next_key::<FieldName<'de>>()? {
            fields.push((name.0, map.next_value::<&'de RawValue>()?));
        }
        Ok(JsonObject { fields })
    }
}

/// A field name, borrowed from the input unless it has escapes.
struct FieldName<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(name.to_string())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_written() {
        let bytes = br#" {"s": "a\"b", "plain": "x", "n": 2.50, "big": 12345678901234567890.123,
            "t": true, "z": null, "a": [1, {"k": "v"}], "o": {"k": 1}, "dup": 1, "dup": 2,
            "esc\u0061ped": "yes"} "#;
        let object = JsonObject::parse(bytes).unwrap();
        assert_eq!(object.get("s").unwrap().as_str().unwrap(), "a\"b");
        assert!(matches!(
            object.get("plain").unwrap().as_str(),
            Some(Cow::Borrowed("x"))
        ));
        assert_eq!(object.get("n").unwrap().as_number(), Some("2.50"));
        assert_eq!(
            object.get("big").unwrap().as_number(),
            Some("12345678901234567890.123")
        );
        assert_eq!(object.get("t").unwrap().as_bool(), Some(true));
        assert!(object.get("z").is_some() && object.present("z").is_none());
        let array = object.get("a").unwrap().as_array().unwrap();
        assert_eq!(array.len(), 2);
        assert_eq!(
            array[1]
                .as_object()
                .unwrap()
                .get("k")
                .unwrap()
                .as_str()
                .unwrap(),
            "v"
        );
        assert_eq!(object.get("o").unwrap().type_name(), "an object");
        assert_eq!(object.get("dup").unwrap().text(), "2");
        assert_eq!(object.get("escaped").unwrap().as_str().unwrap(), "yes");
        assert!(object.get("missing").is_none());
        assert_eq!(object.get("n").unwrap().as_str(), None);
        assert_eq!(object.get("s").unwrap().as_number(), None);
    }

    #[test]
    fn non_objects_and_invalid_json_are_told_apart() {
        for (text, expected) in [
            ("[1, 2]", Some("an array")),
            (" 5 ", Some("a number")),
            ("\"x\"", Some("a string")),
            ("null", Some("null")),
            ("[1, 2", None),
            ("{\"a\": }", None),
            ("{} x", None),
            ("", None),
        ] {
            match (JsonObject::parse(text.as_bytes()), expected) {
                (Err(NotAnObject::OtherType(name)), Some(expected)) => assert_eq!(name, expected),
                (Err(NotAnObject::Invalid(_)), None) => {}
                (other, _) => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
