//! The body of a policy preview (SPEC §12.4): `{"upsert": [policy, …],
//! "delete": [identity, …]}`, or a JSON array of policies (upserts only).
//! Each policy is validated as on the `match_policies` topic and each
//! identity as a message key, so a bad one is refused naming its field
//! (`upsert[2].price_tolerance_pct: must be 0 or more`).

use std::sync::Arc;

use super::json::{Json, JsonObject};
use super::{document_from_json, identity_fields, json_object, DecodeError, Result};
use crate::model::{Document, DocumentKind, MatchPolicy, Text};
use crate::preview::PolicyScope;

/// At most this many policies and deletions in one preview.
pub const MAX_PREVIEW_DOCUMENTS: usize = 1_000;

/// What a preview body asks for: policies to upsert, and deletions as
/// (tenant, scope).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyChangeRequest {
    pub upsert: Vec<Arc<MatchPolicy>>,
    pub delete: Vec<(Text, PolicyScope)>,
}

impl PolicyChangeRequest {
    /// Every tenant the request names, sorted, each once.
    pub fn tenants(&self) -> Vec<Text> {
        let mut tenants: Vec<Text> = self
            .upsert
            .iter()
            .map(|policy| policy.tenant_id.clone())
            .chain(self.delete.iter().map(|(tenant, _)| tenant.clone()))
            .collect();
        tenants.sort();
        tenants.dedup();
        tenants
    }
}

/// Decodes a preview body.
///
/// ```
/// use trimatch_dataflows::decode::policy_changes::policy_changes;
///
/// let body = br#"{"upsert": [{"tenant_id": "acme", "vendor_id": "V-17", "price_tolerance_pct": "5"}],
///                 "delete": [{"tenant_id": "acme", "category": "packaging"}]}"#;
/// let request = policy_changes(body).unwrap();
/// assert_eq!(request.upsert.len(), 1);
/// assert_eq!(request.delete[0].1, (None, Some("packaging".into())));
/// let bad = br#"{"upsert": [{"tenant_id": "acme", "qty_tolerance_abs": "-1"}]}"#;
/// assert!(policy_changes(bad).unwrap_err().to_string().starts_with("upsert[0].qty_tolerance_abs:"));
/// ```
pub fn policy_changes(bytes: &[u8]) -> Result<PolicyChangeRequest> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| DecodeError::new("body", "not UTF-8 text"))?;
    if text.trim_start().starts_with('[') {
        let wrapped = format!("{{\"upsert\": {text}}}");
        return from_object(&json_object(wrapped.as_bytes(), "body")?);
    }
    from_object(&json_object(bytes, "body")?)
}

fn from_object(object: &JsonObject<'_>) -> Result<PolicyChangeRequest> {
    if let Some(name) = object
        .names()
        .find(|name| !matches!(*name, "upsert" | "delete"))
    {
        return Err(DecodeError::new(
            "body",
            format!("unknown field {name:?} (expected upsert and delete)"),
        ));
    }
    let list = |name: &str| match object.present(name) {
        None => Ok(Vec::new()),
        Some(value) => array(value, name),
    };
    let (upserts, deletes) = (list("upsert")?, list("delete")?);
    if upserts.len() + deletes.len() > MAX_PREVIEW_DOCUMENTS {
        return Err(DecodeError::new(
            "body",
            format!("more than {MAX_PREVIEW_DOCUMENTS} policies and deletions in one preview"),
        ));
    }
    let mut request = PolicyChangeRequest::default();
    for (index, value) in upserts.into_iter().enumerate() {
        let path = format!("upsert[{index}]");
        match document_from_json(DocumentKind::MatchPolicy, value)
            .map_err(|error| error.nested_in(&path))?
        {
            Document::MatchPolicy(policy) => request.upsert.push(policy),
            _ => unreachable!("a match policy decodes as one"),
        }
    }
    for (index, value) in deletes.into_iter().enumerate() {
        let path = format!("delete[{index}]");
        let object = value
            .as_object()
            .ok_or_else(|| DecodeError::new(&path, "expected an identity object"))?;
        let fields = identity_fields(DocumentKind::MatchPolicy, &object, &path)?;
        let optional = |text: &String| (!text.is_empty()).then(|| Text::from(text.as_str()));
        request.delete.push((
            Text::from(fields[0].as_str()),
            (optional(&fields[1]), optional(&fields[2])),
        ));
    }
    Ok(request)
}

fn array<'a>(value: Json<'a>, path: &str) -> Result<Vec<Json<'a>>> {
    value
        .as_array()
        .ok_or_else(|| DecodeError::new(path, "expected a JSON array"))
}
