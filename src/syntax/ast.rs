//! The typed syntax tree of a recipe file. Every node keeps its span.

use crate::source::{Span, Spanned};

/// A name as written.
pub type Ident = Spanned<String>;

/// One parsed recipe file.
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub items: Vec<Item>,
    /// Comments with their spans (kept for `fmt`).
    pub comments: Vec<Spanned<String>>,
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `version = 1`
    Version(Spanned<u64>),
    /// `import "path.aht"`
    Import(Spanned<String>),
    Decl(Decl),
}

/// The five kinds of declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeclKind {
    Dataset,
    Model,
    Schedule,
    Optimizer,
    Experiment,
}

impl DeclKind {
    pub const ALL: [DeclKind; 5] = [
        DeclKind::Dataset,
        DeclKind::Model,
        DeclKind::Schedule,
        DeclKind::Optimizer,
        DeclKind::Experiment,
    ];

    pub fn keyword(self) -> &'static str {
        match self {
            DeclKind::Dataset => "dataset",
            DeclKind::Model => "model",
            DeclKind::Schedule => "schedule",
            DeclKind::Optimizer => "optimizer",
            DeclKind::Experiment => "experiment",
        }
    }

    pub fn from_keyword(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.keyword() == s)
    }
}

/// `model mlp = mlp { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub kind: Spanned<DeclKind>,
    pub name: Ident,
    pub body: DeclBody,
    pub span: Span,
}

/// What follows the name of a declaration.
#[derive(Clone, Debug, PartialEq)]
pub enum DeclBody {
    /// `= kind { fields }` or `= kind`
    Construct { kind: Ident, block: Option<Block> },
    /// `= base with { fields }`
    Derive { base: Ident, block: Block },
    /// `{ fields }` (experiments)
    Block(Block),
}

impl DeclBody {
    pub fn block(&self) -> Option<&Block> {
        match self {
            DeclBody::Construct { block, .. } => block.as_ref(),
            DeclBody::Derive { block, .. } | DeclBody::Block(block) => Some(block),
        }
    }
}

/// `{ entries }`
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub entries: Vec<Entry>,
    pub span: Span,
}

/// One entry of a block.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Field(Field),
    /// `zip(a, b.c)`
    Zip {
        paths: Vec<Path>,
        span: Span,
    },
    /// `random(n = 20, seed = 1) { lr = loguniform(1e-3, 1e-1) }`
    Random {
        args: Vec<Arg>,
        block: Block,
        span: Span,
    },
}

impl Entry {
    pub fn span(&self) -> Span {
        match self {
            Entry::Field(f) => f.span,
            Entry::Zip { span, .. } | Entry::Random { span, .. } => *span,
        }
    }
}

/// A dot-separated path: `lr`, `aht.lr`.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub parts: Vec<Ident>,
    pub span: Span,
}

impl Path {
    pub fn dotted(&self) -> String {
        self.parts
            .iter()
            .map(|p| p.node.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// `path = value`
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub path: Path,
    pub value: Expr,
    pub span: Span,
}

/// A call argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

/// Units of a quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    Steps,
    Epochs,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Steps => "steps",
            Unit::Epochs => "epochs",
        }
    }
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
        }
    }
}

/// An expression.
pub type Expr = Spanned<ExprKind>;

/// The forms of expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A number, with its text as written (kept by `fmt`).
    Number {
        value: f64,
        text: String,
        integer: bool,
    },
    Str(String),
    Bool(bool),
    /// `50 steps`
    Quantity {
        value: f64,
        text: String,
        unit: Unit,
    },
    /// A name.
    Ref(String),
    List(Vec<Expr>),
    /// `kind { fields }`
    Object {
        kind: Ident,
        block: Block,
    },
    /// `name(args)`
    Call {
        name: Ident,
        args: Vec<Arg>,
    },
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `a..b`
    Range(Box<Expr>, Box<Expr>),
    /// `( expr )`
    Paren(Box<Expr>),
}
