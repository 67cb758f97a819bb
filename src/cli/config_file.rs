//! `--config FILE`: settings from a TOML file. Each key is a long option name
//! with `_` for `-` (`flight_addr = "0.0.0.0:50051"`); lists (`envelope`) are
//! arrays; a `[kafka]` table holds librdkafka settings (`-X`). The file's
//! values become `TRIMATCH_…` environment variables unless those are set, so
//! the command line wins, then the environment, then the file.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Reads the file named by `--config` (or `TRIMATCH_CONFIG`) in `args`, if
/// any, into the environment. `known` are the variables the options read: a
/// key that stands for none of them is an error naming it.
pub fn load_into_environment(
    args: impl Iterator<Item = OsString>,
    known: &BTreeSet<String>,
) -> Result<()> {
    let Some(path) = config_path(args) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let variables = variables(&table, known).with_context(|| format!("in {}", path.display()))?;
    for (key, value) in variables {
        if std::env::var_os(&key).is_none() {
            // SAFETY: called at the start of main, before any thread is spawned.
            unsafe { std::env::set_var(key, value) };
        }
    }
    Ok(())
}

fn config_path(mut args: impl Iterator<Item = OsString>) -> Option<PathBuf> {
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("TRIMATCH_CONFIG").map(PathBuf::from)
}

/// The environment variables a config table stands for; each must be one of
/// `known`.
pub fn variables(table: &toml::Table, known: &BTreeSet<String>) -> Result<Vec<(String, String)>> {
    let mut variables = Vec::new();
    for (key, value) in table {
        if key == "kafka" {
            let Some(settings) = value.as_table() else {
                bail!("[kafka] must be a table of librdkafka settings");
            };
            let lines: Vec<String> = settings
                .iter()
                .map(|(name, value)| Ok(format!("{name}={}", scalar(name, value)?)))
                .collect::<Result<_>>()?;
            variables.push(("TRIMATCH_KAFKA_SETTINGS".to_string(), lines.join("\n")));
            continue;
        }
        let name = format!("TRIMATCH_{}", key.to_uppercase().replace(['-', '.'], "_"));
        if !known.contains(&name) {
            let keys: Vec<String> = known
                .iter()
                .filter_map(|variable| variable.strip_prefix("TRIMATCH_"))
                .map(str::to_lowercase)
                .collect();
            bail!(
                "unknown setting {key:?}; the settings are: {}, and a [kafka] table",
                keys.join(", ")
            );
        }
        let text = match value {
            toml::Value::Array(items) => items
                .iter()
                .map(|item| scalar(key, item))
                .collect::<Result<Vec<_>>>()?
                .join(","),
            other => scalar(key, other)?,
        };
        variables.push((name, text));
    }
    Ok(variables)
}

fn scalar(key: &str, value: &toml::Value) -> Result<String> {
    Ok(match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => number.to_string(),
        toml::Value::Boolean(flag) => flag.to_string(),
        other => bail!("{key}: expected a string, number or boolean, got {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_trimatch_variables() {
        let table: toml::Table = r#"
            brokers = "kafka-0:9092,kafka-1:9092"
            workers = 4
            wait_for_topics = true
            envelope = ["invoices=debezium", "purchase_orders=debezium"]
            price_tolerance_pct = "2"
            [kafka]
            "security.protocol" = "SASL_SSL"
            "sasl.mechanism" = "PLAIN"
        "#
        .parse()
        .unwrap();
        let known: BTreeSet<String> = [
            "BROKERS",
            "WORKERS",
            "WAIT_FOR_TOPICS",
            "ENVELOPE",
            "PRICE_TOLERANCE_PCT",
        ]
        .iter()
        .map(|name| format!("TRIMATCH_{name}"))
        .collect();
        let variables: std::collections::BTreeMap<String, String> =
            variables(&table, &known).unwrap().into_iter().collect();
        assert_eq!(variables["TRIMATCH_BROKERS"], "kafka-0:9092,kafka-1:9092");
        assert_eq!(variables["TRIMATCH_WORKERS"], "4");
        assert_eq!(variables["TRIMATCH_WAIT_FOR_TOPICS"], "true");
        assert_eq!(
            variables["TRIMATCH_ENVELOPE"],
            "invoices=debezium,purchase_orders=debezium"
        );
        assert_eq!(variables["TRIMATCH_PRICE_TOLERANCE_PCT"], "2");
        assert_eq!(
            variables["TRIMATCH_KAFKA_SETTINGS"],
            "sasl.mechanism=PLAIN\nsecurity.protocol=SASL_SSL"
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it_and_the_known_ones() {
        let table: toml::Table = "flight_adress = \"0.0.0.0:50051\"".parse().unwrap();
        let known = BTreeSet::from(["TRIMATCH_FLIGHT_ADDR".to_string()]);
        let error = variables(&table, &known).unwrap_err().to_string();
        assert!(
            error.contains("unknown setting \"flight_adress\"; the settings are: flight_addr"),
            "{error}"
        );
    }

    #[test]
    fn the_path_comes_from_either_spelling() {
        let args = |list: &[&str]| {
            list.iter()
                .map(OsString::from)
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(
            config_path(args(&["trimatch", "serve", "--config", "a.toml"])),
            Some("a.toml".into())
        );
        assert_eq!(
            config_path(args(&["trimatch", "serve", "--config=b.toml"])),
            Some("b.toml".into())
        );
    }
}
