//! The `trimatch` binary.
//!
//! Today it offers `validate`: check messages against the input contract
//! (SPEC §1) exactly as the pipeline will, and print each rejection's reason.
//! `serve`, `demo`, `query` and `subscribe` arrive with the connector and
//! serving layers.

use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use trimatch_dataflows::decode::decode_document;
use trimatch_dataflows::model::DocumentKind;

const USAGE: &str = "\
usage: trimatch validate <topic> [FILE ...]

Checks JSON documents, one per line, from each FILE (or standard input) against
trimatch's input contract and prints `ok` or the reason each one would be
dead-lettered. <topic> is one of: purchase_orders, goods_receipts, invoices,
match_policies. Exits 1 if any document is rejected.";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("trimatch: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<bool> {
    match args.first().map(String::as_str) {
        Some("validate") => {
            let Some(topic) = args.get(1) else {
                bail!("validate needs a topic\n\n{USAGE}")
            };
            let kind = DocumentKind::ALL
                .into_iter()
                .find(|kind| kind.default_topic() == topic)
                .with_context(|| format!("unknown topic {topic:?}\n\n{USAGE}"))?;
            let mut all_valid = true;
            if args.len() == 2 {
                all_valid &= validate(kind, "<stdin>", BufReader::new(std::io::stdin()))?;
            }
            for path in &args[2..] {
                let file =
                    std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
                all_valid &= validate(kind, path, BufReader::new(file))?;
            }
            Ok(all_valid)
        }
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(true)
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// Validates every non-empty line of `input`; returns whether all were valid.
fn validate(kind: DocumentKind, name: &str, input: impl BufRead) -> Result<bool> {
    let mut all_valid = true;
    for (index, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match decode_document(kind, line.as_bytes()) {
            Ok(_) => println!("{name}:{}: ok", index + 1),
            Err(reason) => {
                all_valid = false;
                println!("{name}:{}: rejected: {reason}", index + 1);
            }
        }
    }
    Ok(all_valid)
}
