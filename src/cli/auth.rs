//! `trimatch auth`: manage the API token file that `serve --auth-file`
//! reads. `add-token` prints the new token once (only its salted hash is
//! stored); `revoke-token` removes one; `list` shows who has which role and
//! tenants. A running server picks the changes up on SIGHUP.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::serve::auth::{Role, TenantScope, TokenFile};

#[derive(Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Add a token to the file (created if missing) and print it, once.
    AddToken {
        /// The token file (`serve --auth-file`).
        #[arg(long, env = "TRIMATCH_AUTH_FILE", value_name = "FILE")]
        file: PathBuf,
        /// Who the token is for; also the user name of Basic credentials.
        #[arg(long)]
        name: String,
        /// reader: the tenant collections of its tenants; admin: also
        /// dead_letters, source_progress and the status action.
        #[arg(long, value_enum, default_value_t = Role::Reader)]
        role: Role,
        /// The tenants it may read, comma-separated, or "*" for every tenant.
        #[arg(long, value_delimiter = ',', required = true)]
        tenants: Vec<String>,
    },
    /// Remove the token of this name.
    RevokeToken {
        #[arg(long, env = "TRIMATCH_AUTH_FILE", value_name = "FILE")]
        file: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List the tokens: name, role, tenants, created.
    List {
        #[arg(long, env = "TRIMATCH_AUTH_FILE", value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(args: AuthArgs) -> Result<()> {
    match args.command {
        AuthCommand::AddToken {
            file,
            name,
            role,
            tenants,
        } => {
            let scope = TenantScope::from_list(&tenants).map_err(anyhow::Error::msg)?;
            let token = TokenFile::add(&file, &name, role, scope.clone())?;
            eprintln!(
                "added {name:?} ({}, tenants {scope}) to {}; the token is shown only now:",
                role.name(),
                file.display()
            );
            println!("{token}");
            eprintln!("a running trimatch picks it up on SIGHUP (kill -HUP <pid>)");
        }
        AuthCommand::RevokeToken { file, name } => {
            if !TokenFile::revoke(&file, &name)? {
                bail!("{} has no token named {name:?}", file.display());
            }
            eprintln!(
                "revoked {name:?}; a running trimatch refuses it, and its Handshake sessions, after SIGHUP"
            );
        }
        AuthCommand::List { file } => {
            for entry in TokenFile::load(&file)?.tokens {
                println!(
                    "{}\t{}\t{}\t{}",
                    entry.name,
                    entry.role.name(),
                    entry.tenants.join(","),
                    entry.created_at.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}
