//! What an authenticated principal may read (SPEC §9), decided on the server
//! for every call of either adapter before anything is read.
//!
//! * `dead_letters`, `source_progress` and the `status` action are for admins
//!   of every tenant (their rows belong to no tenant, and dead letters echo
//!   raw input);
//! * a tenant-scoped principal's reads are limited to its tenants: the
//!   server adds the tenant set to the filter (reads seek to each tenant),
//!   and a filter naming another tenant is PERMISSION_DENIED;
//! * a single process's shard (`"shard": true`) is for the processes of the
//!   cluster, which forward the caller's tenant set with the request.

use std::sync::Arc;

use tonic::Status;
use trimatch_dataflows::OutputCollection;

use crate::output::filter::{has_tenants, RowFilter};
use crate::serve::auth::{Principal, TenantScope};
use crate::serve::tickets::Ticket as Query;

/// Whether `principal` may see that `collection` exists and read it.
pub fn may_read(principal: &Principal, collection: OutputCollection) -> bool {
    has_tenants(collection) || authorize_admin(principal, collection.name()).is_ok()
}

/// `query` as `principal` may run it: refused, or with its filter limited to
/// the principal's tenants.
pub fn authorize(principal: &Principal, query: Query) -> Result<Query, Status> {
    Ok(match query {
        Query::Snapshot(mut query) => {
            query.filter = scoped(principal, query.collection, query.filter, query.shard)?;
            Query::Snapshot(query)
        }
        Query::Subscribe(mut query) => {
            query.filter = scoped(principal, query.collection, query.filter, query.shard)?;
            Query::Subscribe(query)
        }
    })
}

/// The check for what belongs to no tenant (`dead_letters`,
/// `source_progress`, the `status` action): it shows every tenant's input,
/// so it needs an admin of every tenant.
/// An admin whose tenants include `tenant` (a policy preview, SPEC §12.4).
pub fn authorize_tenant_admin(
    principal: &Principal,
    tenant: &str,
    what: &str,
) -> Result<(), Status> {
    if !principal.is_admin() {
        return Err(Status::permission_denied(format!(
            "{what} is for admins of the tenant; {:?} has the reader role",
            principal.name
        )));
    }
    if !principal.tenants.allows(tenant) {
        return Err(Status::permission_denied(format!(
            "{what} names tenant {tenant:?}, and {:?} is an admin of the tenants {} only",
            principal.name, principal.tenants
        )));
    }
    Ok(())
}

pub fn authorize_admin(principal: &Principal, what: &str) -> Result<(), Status> {
    if !principal.is_admin() {
        return Err(Status::permission_denied(format!(
            "{what} is for admins; {:?} has the reader role",
            principal.name
        )));
    }
    if principal.tenants != TenantScope::All {
        return Err(Status::permission_denied(format!(
            "{what} shows every tenant's input, so it is for admins of every tenant (\"*\"); {:?} may read the tenants {}",
            principal.name, principal.tenants
        )));
    }
    Ok(())
}

/// The filter of a read of `collection` by `principal` (see the module doc).
pub fn scoped(
    principal: &Principal,
    collection: OutputCollection,
    filter: Arc<RowFilter>,
    shard: bool,
) -> Result<Arc<RowFilter>, Status> {
    if shard && !principal.cluster {
        return Err(Status::permission_denied(
            "shard reads are for the processes of this cluster (they present the cluster token); leave out \"shard\" to read the whole state",
        ));
    }
    if !has_tenants(collection) {
        authorize_admin(principal, collection.name())?;
        return Ok(filter);
    }
    let TenantScope::Only(tenants) = &principal.tenants else {
        return Ok(filter);
    };
    let outside = |tenant: &str| {
        Status::permission_denied(format!(
            "{:?} may read the tenants {}; the request asks for tenant {tenant:?}",
            principal.name, principal.tenants
        ))
    };
    if let Some(tenant) = filter.key().filter(|tenant| !tenants.contains(*tenant)) {
        return Err(outside(tenant));
    }
    if let Some(tenant) = filter
        .tenants()
        .and_then(|asked| asked.iter().find(|tenant| !tenants.contains(*tenant)))
    {
        return Err(outside(tenant));
    }
    let limited = (*filter)
        .clone()
        .within_tenants(collection, tenants.clone())
        .map_err(|error| Status::internal(error.to_string()))?;
    Ok(Arc::new(limited))
}
