//! Adaptive heavy-tailed SGD: a recipe language and its interpreter.
//!
//! The pipeline: [`source`] → [`syntax`] (pest → typed AST) → [`check`] (AST → [`plan::Plan`],
//! every error at once) → lowering and training.

pub mod bench;
pub mod check;
#[cfg(feature = "cuda")]
mod cuda;
pub mod data;
pub mod diagnostic;
pub mod fmt;
pub mod fsutil;
pub mod lsp;
pub mod model;
pub mod optim;
pub mod plan;
pub mod report;
pub mod simd;
pub mod source;
pub mod sweep;
pub mod syntax;
pub mod train;
