//! The backend conformance suite, written once, generic over the backend: one module per op
//! family (the same names as `core/src/backend/` and each backend's files). Every backend crate
//! instantiates it (`tests/tests/conformance_*.rs` for the CPU).
//!
//! Each family checks, on fresh random inputs: the forward against a reference (the core's
//! slice functions or a plain f64 implementation here), the backward against finite differences
//! of that reference, and that bad shapes are errors. Non-CPU backends are also compared with
//! the CPU backend within a stated [`Tolerance`].

pub mod attention;
pub(crate) mod common;
pub mod conv;
pub mod gaussian;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod roi;
pub mod splat;
pub mod tensor;

pub use splat::Tolerance;
