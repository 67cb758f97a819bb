//! Bounds on what callers hold at once: SQL statements planning or running,
//! Flight streams open. A [`Slots`] counts them in all and per caller, and
//! refuses one past either bound at once with RESOURCE_EXHAUSTED (queuing
//! would only hide an overload behind client timeouts). A [`SlotPermit`]
//! frees its slot when dropped, so a slot lives exactly as long as the
//! statement or the response stream that holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;

use crate::serve::auth::Principal;

/// What a kind of slot is, as refusals name it.
#[derive(Clone, Copy, Debug)]
pub struct SlotKind {
    /// What is counted, plural ("statements").
    pub things: &'static str,
    /// The verb of one in use ("running").
    pub state: &'static str,
    /// The setting of the bound in all.
    pub total_flag: &'static str,
    /// The setting of the bound per caller.
    pub caller_flag: &'static str,
}

/// Counts slots in use, in all and per caller.
pub struct Slots {
    kind: SlotKind,
    max_total: usize,
    max_per_caller: usize,
    used: Mutex<Used>,
}

#[derive(Default)]
struct Used {
    total: usize,
    /// Only callers holding a slot are here, so the map is never larger
    /// than `max_total`.
    by_caller: HashMap<String, usize>,
}

/// One slot in use; dropping it frees the slot.
pub struct SlotPermit {
    slots: Arc<Slots>,
    caller: String,
}

impl Slots {
    pub fn new(kind: SlotKind, max_total: usize, max_per_caller: usize) -> Arc<Self> {
        Arc::new(Slots {
            kind,
            max_total: max_total.max(1),
            max_per_caller: max_per_caller.max(1),
            used: Mutex::new(Used::default()),
        })
    }

    /// A slot for `principal`, or RESOURCE_EXHAUSTED saying which bound.
    pub fn take(self: &Arc<Self>, principal: &Principal) -> Result<SlotPermit, Status> {
        let SlotKind {
            things,
            state,
            total_flag,
            caller_flag,
        } = self.kind;
        let caller = caller_of(principal);
        let mut used = self.used.lock().expect("slots lock");
        let mine = used.by_caller.get(&caller).copied().unwrap_or(0);
        if mine >= self.max_per_caller {
            return Err(Status::resource_exhausted(format!(
                "{mine} of your {things} are {state}, the most one caller may have at once \
                 ({caller_flag}); wait for one to finish, or cancel it"
            )));
        }
        if used.total >= self.max_total {
            return Err(Status::resource_exhausted(format!(
                "{} {things} are {state}, the most this server allows at once ({total_flag}); \
                 retry in a moment",
                used.total
            )));
        }
        used.total += 1;
        *used.by_caller.entry(caller.clone()).or_insert(0) += 1;
        Ok(SlotPermit {
            slots: self.clone(),
            caller,
        })
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.used.lock().expect("slots lock").total
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let mut used = self.slots.used.lock().expect("slots lock");
        used.total -= 1;
        if let Some(count) = used.by_caller.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                used.by_caller.remove(&self.caller);
            }
        }
    }
}

/// Who a slot counts against: the API token behind the credential when
/// there is one (sessions from one token are one caller), else the
/// principal's name.
pub fn caller_of(principal: &Principal) -> String {
    match &principal.token_id {
        Some(id) => format!("token:{id}"),
        None => format!("name:{}", principal.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str) -> Principal {
        Principal {
            name: name.to_string(),
            token_id: None,
            ..Principal::anonymous()
        }
    }

    #[test]
    fn callers_and_the_server_each_have_a_bound() {
        let kind = SlotKind {
            things: "statements",
            state: "running",
            total_flag: "--total",
            caller_flag: "--per-caller",
        };
        let slots = Slots::new(kind, 3, 2);
        let (alice, bob) = (caller("alice"), caller("bob"));
        let first = slots.take(&alice).unwrap();
        let _second = slots.take(&alice).unwrap();
        let refused = slots.take(&alice).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("2 of your statements are running")
                && refused.message().contains("--per-caller"),
            "{refused:?}"
        );
        let _third = slots.take(&bob).unwrap();
        let full = slots.take(&bob).err().unwrap();
        assert!(
            full.message().contains("3 statements are running"),
            "{full:?}"
        );
        drop(first);
        assert_eq!(slots.in_use(), 2);
        assert!(slots.take(&alice).is_ok());
        assert_eq!(slots.in_use(), 2, "the permit above was dropped at once");
    }
}
