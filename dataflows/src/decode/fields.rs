//! Field helpers for decoding: each reads one JSON field of a document (or
//! of one of its lines) and validates it, or says which field is wrong and
//! why. `parent` is the JSON path of the enclosing object ("" at the top, or
//! e.g. `lines[2]`); a field's full path is built only for an error, since
//! formatting one per field was a measurable part of decoding.

use std::collections::HashSet;
use std::fmt::Write;

use std::borrow::Cow;

use rust_decimal::Decimal;

use super::json::{Json, JsonObject};
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

pub(super) fn wrong_type(path: &str, expected: &str, got: Json<'_>) -> DecodeError {
    DecodeError::new(
        path,
        format!("expected {expected}, got {}", got.type_name()),
    )
}

pub(super) fn unknown_value(path: &str, got: &str, expected: &str) -> DecodeError {
    DecodeError::new(path, format!("unknown value {got:?} (expected {expected})"))
}

pub(super) fn optional_str<'a>(
    object: &JsonObject<'a>,
    field: &str,
    parent: &str,
) -> Result<Option<Cow<'a, str>>> {
    match object.present(field) {
        None => Ok(None),
        Some(value) => match value.as_str() {
            Some(text) => Ok(Some(text)),
            None => Err(wrong_type(&field_path(parent, field), "a string", value)),
        },
    }
}

/// A required identifier: a non-empty string of at most 256 bytes.
pub(super) fn identifier(object: &JsonObject<'_>, field: &str, parent: &str) -> Result<Text> {
    optional_identifier(object, field, parent)?
        .ok_or_else(|| DecodeError::new(field_path(parent, field), "missing"))
}

pub(super) fn optional_identifier(
    object: &JsonObject<'_>,
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
    Ok(Some(Text::from(text.as_ref())))
}

pub(super) fn currency(object: &JsonObject<'_>) -> Result<Currency> {
    let text = optional_str(object, "currency", "")?
        .ok_or_else(|| DecodeError::new("currency", "missing"))?;
    let text = text.as_ref();
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
pub(super) fn date(object: &JsonObject<'_>, field: &str) -> Result<i32> {
    let text =
        optional_str(object, field, "")?.ok_or_else(|| DecodeError::new(field, "missing"))?;
    let text = text.as_ref();
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
pub(super) fn line_number(line: &JsonObject<'_>, field: &str, parent: &str) -> Result<u32> {
    let path = || field_path(parent, field);
    let value = line
        .present(field)
        .ok_or_else(|| DecodeError::new(path(), "missing"))?;
    let number = value
        .as_number()
        .ok_or_else(|| wrong_type(&path(), "an integer", value))?;
    match number.parse::<u64>() {
        Ok(n) if (1..=i32::MAX as u64).contains(&n) => Ok(n as u32),
        _ => Err(DecodeError::new(
            path(),
            format!("must be an integer from 1 to {}, got {number}", i32::MAX),
        )),
    }
}

/// A line number that may be absent or null (`None`), else as [`line_number`].
pub(super) fn optional_line_number(
    object: &JsonObject<'_>,
    field: &str,
    parent: &str,
) -> Result<Option<u32>> {
    match object.present(field) {
        None => Ok(None),
        Some(_) => line_number(object, field, parent).map(Some),
    }
}

/// A required RFC 3339 timestamp with an offset (`T`/`Z` in either case), as
/// milliseconds since the Unix epoch, UTC; finer digits are truncated.
pub(super) fn timestamp_millis(object: &JsonObject<'_>, field: &str) -> Result<i64> {
    let text =
        optional_str(object, field, "")?.ok_or_else(|| DecodeError::new(field, "missing"))?;
    // RFC 3339 allows lower-case `t` and `z`; its other separators (a space)
    // are not accepted.
    let upper = text.to_ascii_uppercase();
    let parsed = (upper.as_bytes().get(10) == Some(&b'T'))
        .then(|| chrono::DateTime::parse_from_rfc3339(&upper).ok())
        .flatten();
    parsed.map(|time| time.timestamp_millis()).ok_or_else(|| {
        DecodeError::new(
            field,
            format!(
                "not an RFC 3339 timestamp with an offset (e.g. 2026-11-04T10:00:00Z): {text:?}"
            ),
        )
    })
}

pub(super) fn decimal(
    object: &JsonObject<'_>,
    field: &str,
    parent: &str,
    rule: DecimalRule,
) -> Result<Decimal> {
    optional_decimal(object, field, parent, rule)?
        .ok_or_else(|| DecodeError::new(field_path(parent, field), "missing"))
}

/// A decimal given as a JSON string or a JSON number, parsed exactly from its text.
pub(super) fn optional_decimal(
    object: &JsonObject<'_>,
    field: &str,
    parent: &str,
    rule: DecimalRule,
) -> Result<Option<Decimal>> {
    let Some(value) = object.present(field) else {
        return Ok(None);
    };
    let text = match (value.as_str(), value.as_number()) {
        (Some(text), _) => text,
        (None, Some(number)) => Cow::Borrowed(number),
        (None, None) => {
            return Err(wrong_type(
                &field_path(parent, field),
                "a decimal (string or number)",
                value,
            ))
        }
    };
    parse_decimal(&text, rule)
        .map(Some)
        .map_err(|problem| DecodeError::new(field_path(parent, field), problem))
}

/// Decodes the `lines` array (1 to 10,000 objects) with `line_fn(object, path)`.
pub(super) fn lines_of<T>(
    object: &JsonObject<'_>,
    line_fn: impl FnMut(&JsonObject<'_>, &str) -> Result<T>,
) -> Result<Vec<T>> {
    let value = object
        .present("lines")
        .ok_or_else(|| DecodeError::new("lines", "missing"))?;
    let lines = entries_of("lines", "line", value, line_fn)?;
    if lines.is_empty() {
        return Err(DecodeError::new(
            "lines",
            "no lines: a document needs at least one",
        ));
    }
    Ok(lines)
}

/// Decodes an optional array of objects (absent, null or empty: none; at
/// most 10,000) named `field`, such as a payment's `allocations`.
pub(super) fn optional_entries<T>(
    object: &JsonObject<'_>,
    field: &str,
    noun: &str,
    entry_fn: impl FnMut(&JsonObject<'_>, &str) -> Result<T>,
) -> Result<Vec<T>> {
    match object.present(field) {
        None => Ok(Vec::new()),
        Some(value) => entries_of(field, noun, value, entry_fn),
    }
}

/// The objects of the array `value` (field `field`, at most 10,000, each a
/// `noun` in messages), each decoded with `entry_fn(object, path)`.
fn entries_of<T>(
    field: &str,
    noun: &str,
    value: Json<'_>,
    mut entry_fn: impl FnMut(&JsonObject<'_>, &str) -> Result<T>,
) -> Result<Vec<T>> {
    let entries = value
        .as_array()
        .ok_or_else(|| wrong_type(field, &format!("an array of {noun} objects"), value))?;
    if entries.len() > MAX_LINES {
        return Err(DecodeError::new(
            field,
            format!(
                "{} {field} is more than the limit of {MAX_LINES}",
                entries.len()
            ),
        ));
    }
    // One buffer for every entry's path: it names fields only in errors, and
    // formatting a fresh one per line was a measurable part of decoding.
    let mut path = String::new();
    let mut decoded = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        path.clear();
        write!(path, "{field}[{index}]").expect("writing to a String succeeds");
        decoded.push(match entry.as_object() {
            Some(entry) => entry_fn(&entry, &path)?,
            None => {
                let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                return Err(wrong_type(
                    &path,
                    &format!("{article} {noun} object"),
                    *entry,
                ));
            }
        });
    }
    Ok(decoded)
}
