//! JSON parsing that refuses duplicate object keys at any depth (RULES.md
//! "Settled details"): serde_json keeps the last of two equal keys, and a
//! payment system must not guess which amount was meant.

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a text is not a JSON value without duplicate keys.
#[derive(Debug)]
pub enum StrictError {
    /// Not JSON (serde_json's message, with line and column).
    Malformed(serde_json::Error),
    /// An object repeats a key; the path of the second occurrence, e.g.
    /// `amount` or `metadata.channel` or `items[2].id`.
    DuplicateKey(String),
}

/// Parses `text` as one JSON value, refusing duplicate keys.
pub fn from_str(text: &str) -> Result<Value, StrictError> {
    let path = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict { path: &path }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (value, path.into_inner()) {
        (_, Some(segments)) => Err(StrictError::DuplicateKey(render(segments))),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(StrictError::Malformed(e)),
    }
}

/// A path segment, innermost first while the error travels outwards.
enum Segment {
    Key(String),
    Index(usize),
}

fn render(mut segments: Vec<Segment>) -> String {
    segments.reverse();
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&k);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// A seed that builds a `Value`, recording where a duplicate key was found.
#[derive(Clone, Copy)]
struct Strict<'a> {
    path: &'a RefCell<Option<Vec<Segment>>>,
}

impl Strict<'_> {
    /// Adds `segment` to the path of a duplicate found below it.
    fn below(&self, segment: impl FnOnce() -> Segment) {
        if let Some(p) = self.path.borrow_mut().as_mut() {
            p.push(segment());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return Ok(Value::Array(out)),
                Err(e) => {
                    let index = out.len();
                    self.below(|| Segment::Index(index));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                *self.path.borrow_mut() = Some(vec![Segment::Key(key)]);
                return Err(de::Error::custom("duplicate key"));
            }
            match map.next_value_seed(self) {
                Ok(v) => {
                    out.insert(key, v);
                }
                Err(e) => {
                    self.below(|| Segment::Key(key));
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(text: &str) -> Option<String> {
        match from_str(text) {
            Err(StrictError::DuplicateKey(p)) => Some(p),
            _ => None,
        }
    }

    #[test]
    fn refuses_duplicates_at_any_depth_and_names_them() {
        assert_eq!(dup(r#"{"amount":"1.00","amount":"2.00"}"#).as_deref(), Some("amount"));
        assert_eq!(dup(r#"{"a":1,"metadata":{"k":"x","k":"y"}}"#).as_deref(), Some("metadata.k"));
        assert_eq!(dup(r#"{"x":[{"id":1},{"id":2,"id":3}]}"#).as_deref(), Some("x[1].id"));
        assert_eq!(dup(r#"[[{"a":1,"a":1}]]"#).as_deref(), Some("[0][0].a"));
    }

    #[test]
    fn same_values_as_serde_json_otherwise() {
        for text in
            [r#"{"a":1,"b":[1,2.5,-3,null,true],"c":{"d":"e"},"d":{"a":1}}"#, "[]", "\"s\"", "12345678901234567890"]
        {
            let ours = from_str(text).ok();
            let theirs: Option<Value> = serde_json::from_str(text).ok();
            assert_eq!(ours, theirs, "{text}");
        }
        for bad in ["{", r#"{"a":1}x"#, r#"{"a" 1}"#, ""] {
            assert!(matches!(from_str(bad), Err(StrictError::Malformed(_))), "{bad}");
        }
    }
}
