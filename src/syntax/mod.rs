//! Syntax: recipe text -> typed AST with spans. Nothing here knows about checking or training.

pub mod ast;
mod chars;
mod parse;

pub use parse::{parse, parse_value, parse_value_at};
