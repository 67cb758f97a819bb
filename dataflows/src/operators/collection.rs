//! The collection and arrangement types the operators take and return: the
//! graph's, at logical time [`Time`] with integer multiplicities.

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::VecCollection;

use crate::model::Time;

/// A collection of the graph, at logical time [`Time`], with integer multiplicities.
pub type Collection<'s, D> = VecCollection<'s, Time, D, isize>;

/// An arrangement keyed by `K` with values `V`.
pub type KeyedArrangement<'s, K, V> = Arranged<'s, TraceAgent<ValSpine<K, V, Time, isize>>>;
