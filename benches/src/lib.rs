//! Inputs and steps shared by the criterion benches in `benches/` (the benches themselves live
//! there): random splat cases, the tokenizer's synthetic training batch, a training step generic
//! over the backend, and how to wait for a backend's queued work.

pub mod completion;
pub mod splat_cases;
pub mod tokenizer;

pub use completion::Completion;
