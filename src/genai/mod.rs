//! Understanding GenAI spans: a canonical view of a span whichever library wrote it, and its cost.
//!
//! - [`aliases`]: every attribute spelling read, per library, mapped to canonical fields.
//! - [`view`](mod@view): [`view()`] reads a span into a [`GenAiView`] (stage, model, tokens, TTFT,
//!   documents, evaluations, ...) in one pass, borrowing from the span.
//!
//! The `genai` processor that writes all this onto spans is `processor::genai`.
//! - [`facts`]: the facts of a batch's spans the later stages read, read once and handed along.
//! - [`prices`]: the price table (`config/prices.yaml`, compiled in, plus user entries) and
//!   [`PriceTable::cost`].
//!
//! ```text
//! let prices = PriceTable::builtin()?;
//! let v = genai::view(&span);
//! if v.stage == Some(Stage::Llm) {
//!     let cost = prices.cost(&v, SuppliedCost::Prefer);
//! }
//! ```

pub mod aliases;
pub mod facts;
pub mod prices;
pub mod view;

#[cfg(test)]
pub(crate) mod tests;

pub use facts::{Facts, Names, SpanFacts};
pub use prices::{
    Cost, CostOutcome, CostSource, PriceEntry, PriceError, PriceTable, PriceTier, SuppliedCost,
    Unpriced,
};
pub use view::{AliasSet, Document, Evaluation, GenAiView, Tokens, view};
