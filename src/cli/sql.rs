//! `trimatch sql`: runs SQL on a running trimatch over Flight SQL (SPEC §10)
//! and prints the result as `query` prints a collection (table, CSV or JSON
//! lines). With no statement it reads statements from standard input, one
//! per `;`, with a prompt on a terminal.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, Context, Result};
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightClient, FlightDescriptor};
use clap::Args;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use prost::Message;

use super::client::{flight_error, print_batches, read_ticket, Format};
use super::connection::Connection;
use crate::serve::flight_sql::AS_OF_HEADER;

#[derive(Args)]
pub struct SqlArgs {
    /// The statement, e.g. "SELECT tenant_id, count(*) FROM match_exceptions GROUP BY tenant_id".
    /// Without one, statements are read from standard input (end each with `;`).
    statement: Option<String>,
    /// The logical time to read at (default: the newest complete time).
    #[arg(long)]
    as_of: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    connection: Connection,
}

/// `trimatch sql`.
pub fn run(args: SqlArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut client = args.connection.connect().await?;
        if let Some(as_of) = args.as_of {
            client.add_header(AS_OF_HEADER, &as_of.to_string())?;
        }
        let mut stdout = std::io::stdout().lock();
        if let Some(statement) = &args.statement {
            return run_statement(&mut client, statement, args.format, &mut stdout).await;
        }
        let stdin = std::io::stdin();
        let interactive = stdin.is_terminal();
        let mut pending = String::new();
        let prompt = |out: &mut dyn Write, pending: &str| -> Result<()> {
            if interactive {
                write!(
                    out,
                    "{}",
                    if pending.is_empty() {
                        "trimatch> "
                    } else {
                        "     ...> "
                    }
                )?;
                out.flush()?;
            }
            Ok(())
        };
        prompt(&mut stdout, &pending)?;
        for line in stdin.lock().lines() {
            pending.push_str(&line?);
            pending.push('\n');
            let (statements, rest) = complete_statements(&pending);
            pending = rest;
            for statement in statements {
                match run_statement(&mut client, &statement, args.format, &mut stdout).await {
                    Ok(()) => {}
                    // At a prompt a bad statement is reported and the next one runs.
                    Err(error) if interactive => writeln!(stdout, "error: {error:#}")?,
                    Err(error) => return Err(error),
                }
            }
            prompt(&mut stdout, pending.trim())?;
        }
        let rest = pending.trim();
        if !rest.is_empty() {
            run_statement(&mut client, rest, args.format, &mut stdout).await?;
        }
        Ok(())
    })
}

/// The complete statements at the start of `text` (each ended by a `;`
/// outside literals and comments, as SQL's tokenizer reads it), and what
/// follows them. Text that does not tokenize yet (an open string literal)
/// waits for more input.
fn complete_statements(text: &str) -> (Vec<String>, String) {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize() else {
        return (Vec::new(), text.to_string());
    };
    let mut statements = Vec::new();
    let mut current = String::new();
    for token in tokens {
        if token == Token::SemiColon {
            let statement = std::mem::take(&mut current);
            if !statement.trim().is_empty() {
                statements.push(statement.trim().to_string());
            }
        } else {
            current.push_str(&token.to_string());
        }
    }
    (statements, current)
}

/// Runs one statement (GetFlightInfo of a `CommandStatementQuery`, then
/// DoGet of its endpoint) and prints its rows in the order the server sent.
async fn run_statement(
    client: &mut FlightClient,
    statement: &str,
    format: Format,
    out: &mut impl Write,
) -> Result<()> {
    let command = CommandStatementQuery {
        query: statement.to_string(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let info = client
        .get_flight_info(descriptor)
        .await
        .map_err(flight_error)
        .with_context(|| format!("the statement failed: {statement}"))?;
    let ticket = info
        .endpoint
        .first()
        .and_then(|endpoint| endpoint.ticket.clone())
        .ok_or_else(|| anyhow!("the server gave no ticket for the statement"))?;
    let (schema, batches) = read_ticket(client, ticket)
        .await
        .with_context(|| format!("the statement failed: {statement}"))?;
    print_batches(&schema, &batches, format, &[], out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::complete_statements;

    #[test]
    fn statements_end_at_semicolons_outside_literals_and_comments() {
        let (statements, rest) =
            complete_statements("SELECT 'a;b' AS c; -- x;y\nSELECT 2;\nSELECT 3");
        assert_eq!(statements, vec!["SELECT 'a;b' AS c", "-- x;y\nSELECT 2"]);
        assert_eq!(rest.trim(), "SELECT 3");
        let (statements, rest) = complete_statements("SELECT 'open; literal");
        assert!(statements.is_empty());
        assert_eq!(rest, "SELECT 'open; literal");
    }
}
