//! What a request tells the layer: its [`Priority`] (an extension) and its cost ([`CostFn`]).

use http::request::Parts;

/// The priority of a request, set as a request extension
/// (`request.extensions_mut().insert(Priority::High)`); requests without one are
/// [`Normal`](Priority::Normal).
///
/// Among the waiters of one key, higher priorities go first (FIFO within a priority). With a
/// [reserve](crate::PaceLayer::reserve), [`Low`](Priority::Low) requests never use the last
/// fraction of a key's burst: they fail fast instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Background work: served after the others, shed first when the quota is tight.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Served before the others.
    High,
}

/// The weight of a request in its key's quotas (GraphQL points, LLM tokens); 1 by default.
///
/// Implemented by [`UnitCost`] and by every closure
/// `Fn(&http::request::Parts) -> u32 + Send + Sync + 'static`. A cost greater than the
/// smallest burst of the key's quotas can never pass and fails with
/// [`CostExceedsBurst`](crate::CostExceedsBurst); a cost of 0 passes without using quota.
pub trait CostFn: Send + Sync + 'static {
    /// The cost of the request whose head is `parts`.
    fn cost(&self, parts: &Parts) -> u32;
}

impl<F> CostFn for F
where
    F: Fn(&Parts) -> u32 + Send + Sync + 'static,
{
    #[inline]
    fn cost(&self, parts: &Parts) -> u32 {
        self(parts)
    }
}

/// Every request costs 1 (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitCost;

impl CostFn for UnitCost {
    #[inline]
    fn cost(&self, _parts: &Parts) -> u32 {
        1
    }
}
