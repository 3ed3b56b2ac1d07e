//! `ahtsgd lsp`: a Language Server Protocol server for recipes. Diagnostics come from the
//! checker (every one, with its code, help and related places, in imported files too); hover
//! and completion read the checker's schema, so a new kind or field appears in the editor
//! without work here; symbols and formatting read the syntax tree and `fmt`; definition,
//! references and rename follow declarations across imports.

pub mod analysis;
pub mod document;
pub mod names;
pub mod position;
pub mod server;
pub mod uri;
pub mod values;

pub use server::serve;
