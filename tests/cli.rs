//! The command line as a person meets it, where no server is needed: a reader
//! that stops early (`trimatch validate … | head`) ends the command quietly.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

const TRIMATCH: &str = env!("CARGO_BIN_EXE_trimatch");

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    // 50,000 rejected documents print ~2 MB, far more than a pipe holds, so
    // the command is still writing when its reader goes away.
    let mut input = tempfile::NamedTempFile::new().unwrap();
    for _ in 0..50_000 {
        writeln!(input, "{{}}").unwrap();
    }
    let mut child = Command::new(TRIMATCH)
        .args(["validate", "invoices"])
        .arg(input.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first_line = [0u8; 32];
    stdout.read_exact(&mut first_line).unwrap();
    assert!(
        String::from_utf8_lossy(&first_line).contains(": rejected: "),
        "{}",
        String::from_utf8_lossy(&first_line)
    );
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "stderr: {stderr}");
    // As ripgrep does: a closed pipe is the reader's choice, not a failure.
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}
