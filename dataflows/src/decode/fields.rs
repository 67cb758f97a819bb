//! Field helpers for decoding: each reads one JSON field of a document (or
//! of one of its lines) and validates it, or says which field is wrong and
//! why. `parent` is the JSON path of the enclosing object ("" at the top, or
//! e.g. `lines[2]`); a field's full path is built only for an error, since
//! formatting one per field was a measurable part of decoding.

use std::collections::HashSet;
use std::fmt::Write;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::{DecodeError, Result, MAX_IDENTIFIER_BYTES, MAX_LINES};
use crate::decimal::{parse_decimal, DecimalRule};
use crate::model::*;

/// The line numbers of one document seen so far, to reject a repeat. A
/// document has a handful of lines, so the first few are kept inline and
/// compared one by one; a hash set (and its allocation) only for long ones.
#[derive(Default)]
pub(super) struct SeenLineNumbers {
    first: [u32; Self::INLINE],
    count: usize,
    rest: HashSet<u32>,
}

impl SeenLineNumbers {
    const INLINE: usize = 16;

    /// Records `line_no`; false if it was seen before.
    pub(super) fn insert(&mut self, line_no: u32) -> bool {
        let inline = self.count.min(Self::INLINE);
        if self.first[..inline].contains(&line_no) {
            return false;
        }
        if self.count < Self::INLINE {
            self.first[self.count] = line_no;
        } else if !self.rest.insert(line_no) {
            return false;
        }
        self.count += 1;
        true
    }
}

pub(super) fn field_path(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// A field's value, treating JSON `null` as absent.
pub(super) fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|value| !value.is_null())
}

pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn wrong_type(path: &str, expected: &str, got: &Value) -> DecodeError {
    DecodeError::new(path, format!("expected {expected}, got {}", type_name(got)))
}

pub(super) fn unknown_value(path: &str, got: &str, expected: &str) -> DecodeError {
    DecodeError::new(path, format!("unknown value {got:?} (expected {expected})"))
}

pub(super) fn optional_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    parent: &str,
) -> Result<Option<&'a str>> {
    match present(object, field) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(wrong_type(&field_path(parent, field), "a string", other)),
    }
}

/// A required identifier: a non-empty string of at most 256 bytes.
pub(super) fn identifier(object: &Map<String, Value>, field: &str, parent: &str) -> Result<Text> {
    optional_identifier(object, field, parent)?
        .ok_or_else(|| DecodeError::new(field_path(parent, field), "missing"))
}

pub(super) fn optional_identifier(
    object: &Map<String, Value>,
    field: &str,
    parent: &str,
) -> Result<Option<Text>> {
    let Some(text) = optional_str(object, field, parent)? else {
        return Ok(None);
    };
    if text.is_empty() {
        return Err(DecodeError::new(
            field_path(parent, field),
            "must not be empty",
        ));
    }
    if text.len() > MAX_IDENTIFIER_BYTES {
        return Err(DecodeError::new(
            field_path(parent, field),
            format!(
                "longer than {MAX_IDENTIFIER_BYTES} bytes ({} bytes)",
                text.len()
            ),
        ));
    }
    Ok(Some(Text::from(text)))
}

pub(super) fn currency(object: &Map<String, Value>) -> Result<Currency> {
    let text = optional_str(object, "currency", "")?
        .ok_or_else(|| DecodeError::new("currency", "missing"))?;
    match text.as_bytes() {
        [a, b, c] if text.bytes().all(|byte| byte.is_ascii_uppercase()) => {
            Ok(Currency([*a, *b, *c]))
        }
        _ => Err(DecodeError::new(
            "currency",
            format!("must be three upper-case letters (ISO 4217, e.g. USD), got {text:?}"),
        )),
    }
}

/// A `YYYY-MM-DD` calendar date as days since 1970-01-01.
pub(super) fn date(object: &Map<String, Value>, field: &str) -> Result<i32> {
    let text =
        optional_str(object, field, "")?.ok_or_else(|| DecodeError::new(field, "missing"))?;
    let bad = || {
        DecodeError::new(
            field,
            format!("not a calendar date in YYYY-MM-DD form: {text:?}"),
        )
    };
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shape_ok {
        return Err(bad());
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad())?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date");
    Ok((date - epoch).num_days() as i32)
}

/// A line number: an integer from 1 to 2^31 − 1 (it is an Arrow `Int32` downstream).
pub(super) fn line_number(line: &Map<String, Value>, field: &str, parent: &str) -> Result<u32> {
    let path = || field_path(parent, field);
    match present(line, field) {
        None => Err(DecodeError::new(path(), "missing")),
        Some(Value::Number(number)) => match number.as_u64() {
            Some(n) if (1..=i32::MAX as u64).contains(&n) => Ok(n as u32),
            _ => Err(DecodeError::new(
                path(),
                format!("must be an integer from 1 to {}, got {number}", i32::MAX),
            )),
        },
        Some(other) => Err(wrong_type(&path(), "an integer", other)),
    }
}

pub(super) fn decimal(
    object: &Map<String, Value>,
    field: &str,
    parent: &str,
    rule: DecimalRule,
) -> Result<Decimal> {
    optional_decimal(object, field, parent, rule)?
        .ok_or_else(|| DecodeError::new(field_path(parent, field), "missing"))
}

/// A decimal given as a JSON string or a JSON number, parsed exactly from its text.
pub(super) fn optional_decimal(
    object: &Map<String, Value>,
    field: &str,
    parent: &str,
    rule: DecimalRule,
) -> Result<Option<Decimal>> {
    let text = match present(object, field) {
        None => return Ok(None),
        Some(Value::String(text)) => text.as_str(),
        Some(Value::Number(number)) => number.as_str(),
        Some(other) => {
            return Err(wrong_type(
                &field_path(parent, field),
                "a decimal (string or number)",
                other,
            ))
        }
    };
    parse_decimal(text, rule)
        .map(Some)
        .map_err(|problem| DecodeError::new(field_path(parent, field), problem))
}

/// Decodes the `lines` array (1 to 10,000 objects) with `line_fn(object, path)`.
pub(super) fn lines_of<T>(
    object: &Map<String, Value>,
    mut line_fn: impl FnMut(&Map<String, Value>, &str) -> Result<T>,
) -> Result<Vec<T>> {
    let lines = match present(object, "lines") {
        None => return Err(DecodeError::new("lines", "missing")),
        Some(Value::Array(lines)) => lines,
        Some(other) => return Err(wrong_type("lines", "an array of line objects", other)),
    };
    if lines.is_empty() {
        return Err(DecodeError::new(
            "lines",
            "no lines: a document needs at least one",
        ));
    }
    if lines.len() > MAX_LINES {
        return Err(DecodeError::new(
            "lines",
            format!(
                "{} lines is more than the limit of {MAX_LINES}",
                lines.len()
            ),
        ));
    }
    // One buffer for every line's path: it names fields only in errors, and
    // formatting a fresh one per line was a measurable part of decoding.
    let mut path = String::new();
    let mut decoded = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        path.clear();
        write!(path, "lines[{index}]").expect("writing to a String succeeds");
        decoded.push(match line {
            Value::Object(line) => line_fn(line, &path)?,
            other => return Err(wrong_type(&path, "a line object", other)),
        });
    }
    Ok(decoded)
}
