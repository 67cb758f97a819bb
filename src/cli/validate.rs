//! `trimatch validate`: checks documents (one JSON object per line) against the
//! input contract (SPEC §1) exactly as the pipeline will, and prints each
//! rejection's reason.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use trimatch_dataflows::decode::decode_document;
use trimatch_dataflows::model::DocumentKind;

/// Checks every file (or standard input); whether every document was valid.
pub fn run(topic: &str, files: &[PathBuf]) -> Result<bool> {
    let kind = DocumentKind::ALL
        .into_iter()
        .find(|kind| kind.default_topic() == topic)
        .with_context(|| {
            let topics: Vec<&str> = DocumentKind::ALL
                .iter()
                .map(|kind| kind.default_topic())
                .collect();
            format!(
                "unknown topic {topic:?}: expected one of {}",
                topics.join(", ")
            )
        })?;
    let mut out = std::io::stdout().lock();
    let mut all_valid = true;
    if files.is_empty() {
        all_valid &= validate(kind, "<stdin>", BufReader::new(std::io::stdin()), &mut out)?;
    }
    for path in files {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        all_valid &= validate(
            kind,
            &path.display().to_string(),
            BufReader::new(file),
            &mut out,
        )?;
    }
    Ok(all_valid)
}

/// Validates every non-empty line of `input`; returns whether all were valid.
fn validate(
    kind: DocumentKind,
    name: &str,
    input: impl BufRead,
    out: &mut impl Write,
) -> Result<bool> {
    let mut all_valid = true;
    for (index, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match decode_document(kind, line.as_bytes()) {
            Ok(_) => writeln!(out, "{name}:{}: ok", index + 1)?,
            Err(reason) => {
                all_valid = false;
                writeln!(out, "{name}:{}: rejected: {reason}", index + 1)?;
            }
        }
    }
    Ok(all_valid)
}
