//! Generic operators the matching graph is built from. None of them knows a
//! SPEC rule or document: each is a small function over collections (the
//! sums, a difference type), with its cost per change beside it and an
//! example that runs it.
//!
//! * [`left_join()`] — every value of one arrangement with the value another
//!   holds for its key, or `None`;
//! * [`reduce_arranged()`] — `reduce`, returning the output's arrangement;
//! * [`running_sums()`] — running totals in order, whose cost per change does
//!   not grow with the group;
//! * [`CountedSum`] — a decimal sum carried as the differences of a
//!   collection, so that `count_total` keeps one total per key.
//!
//! They work on the graph's [`Collection`]s and [`KeyedArrangement`]s (at
//! logical time [`crate::Time`]) and import nothing of the graph that uses
//! them.

mod collection;
pub mod left_join;
pub mod reduce_arranged;
pub mod running_sum;
pub mod sums;

pub use collection::{Collection, KeyedArrangement};
pub use left_join::left_join;
pub use reduce_arranged::reduce_arranged;
pub use running_sum::running_sums;
pub use sums::CountedSum;
