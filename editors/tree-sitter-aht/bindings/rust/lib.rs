//! The `.aht` recipe language for [tree-sitter](https://tree-sitter.github.io/).
//!
//! ```
//! let mut parser = tree_sitter::Parser::new();
//! parser.set_language(&tree_sitter_aht::LANGUAGE.into()).unwrap();
//! let tree = parser.parse("optimizer o = sgd { lr = 0.1 }\n", None).unwrap();
//! assert!(!tree.root_node().has_error());
//! ```

use tree_sitter_language::LanguageFn;

unsafe extern "C" {
    fn tree_sitter_aht() -> *const ();
}

/// The tree-sitter [`LanguageFn`] for `.aht` recipes.
pub const LANGUAGE: LanguageFn = unsafe { LanguageFn::from_raw(tree_sitter_aht) };

/// The node types of the grammar, as JSON.
pub const NODE_TYPES: &str = include_str!("../../src/node-types.json");

/// The syntax-highlighting query, with the capture names of Neovim and the tree-sitter CLI.
pub const HIGHLIGHTS_QUERY: &str = include_str!("../../queries/highlights.scm");

/// The same highlighting with Helix's scope names.
pub const HELIX_HIGHLIGHTS_QUERY: &str = include_str!("../../queries/helix/highlights.scm");
