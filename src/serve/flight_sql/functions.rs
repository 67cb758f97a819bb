//! The SQL functions a reader may call: DataFusion's, less those whose
//! output size a caller chooses.
//!
//! DataFusion's memory pool bounds what operators reserve (joins,
//! aggregates, sorts), but a scalar function allocates its result outside
//! it. Most functions make output no larger than their input, or a fixed
//! multiple of it. A few take the output's size from an argument
//! (`repeat('x', 1e15)`, `lpad(s, 1e15)`, `array_repeat`, `range`) or
//! multiply their inputs' sizes (`replace(s, '', t)` puts `t` between every
//! two characters), and one call can then ask the allocator for petabytes:
//! the process aborts before any pool sees it. Those are not registered for
//! readers, so a statement naming one fails to plan with a sentence saying
//! why, and nothing is allocated.
//!
//! The table functions `generate_series` and `range` stay: they stream
//! rows one batch at a time, and the statement's deadline ends a long one.

use std::sync::Arc;

use datafusion::execution::SessionStateDefaults;
use datafusion::logical_expr::ScalarUDF;
use tonic::Status;

/// The functions not offered to readers, with why.
pub const REFUSED: [(&str, &str); 9] = [
    ("repeat", "its output's size is an argument"),
    ("lpad", "its output's size is an argument"),
    ("rpad", "its output's size is an argument"),
    ("replace", "an empty search string multiplies its output"),
    (
        "regexp_replace",
        "a pattern matching empty text multiplies its output",
    ),
    ("array_repeat", "its output's size is an argument"),
    ("array_resize", "its output's size is an argument"),
    ("range", "as a scalar, its array's size is an argument"),
    (
        "generate_series",
        "as a scalar, its array's size is an argument",
    ),
];

/// DataFusion's scalar functions less [`REFUSED`].
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    SessionStateDefaults::default_scalar_functions()
        .into_iter()
        .filter(|function| {
            let refused = |name: &str| REFUSED.iter().any(|(refused, _)| *refused == name);
            !refused(function.name()) && !function.aliases().iter().any(|alias| refused(alias))
        })
        .collect()
}

/// The answer to a statement that failed to plan because it names a
/// refused function, if it did.
pub fn refusal(planning_error: &str) -> Option<Status> {
    let lowered = planning_error.to_ascii_lowercase();
    if !lowered.contains("function") {
        return None;
    }
    REFUSED
        .iter()
        .find(|(name, _)| {
            lowered.contains(&format!("'{name}'")) || lowered.contains(&format!("\"{name}\""))
        })
        .map(|(name, why)| {
            Status::invalid_argument(format!(
                "{name}() is not offered over Flight SQL: {why}, so one call could exhaust the \
                 server's memory (the functions readers may not call: {})",
                REFUSED.map(|(name, _)| name).join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refused_functions_are_gone_and_the_rest_stay() {
        let names: Vec<String> = scalar_functions()
            .iter()
            .map(|function| function.name().to_string())
            .collect();
        for (refused, _) in REFUSED {
            assert!(!names.iter().any(|name| name == refused), "{refused}");
        }
        for kept in [
            "concat",
            "upper",
            "substr",
            "round",
            "date_trunc",
            "coalesce",
        ] {
            assert!(names.iter().any(|name| name == kept), "{kept} missing");
        }
        let every = SessionStateDefaults::default_scalar_functions();
        assert!(
            every.iter().any(|function| function.name() == "repeat"),
            "DataFusion no longer has repeat(): update REFUSED"
        );
    }
}
