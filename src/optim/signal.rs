//! Training signals and the expressions over them that custom α schedules evaluate each step.
//!
//! The recipe checker compiles `custom { alpha = ... }` into a [`SignalExpr`]; a library user
//! builds one directly.

/// A training signal a custom α expression can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Step,
    Epoch,
    Progress,
    LambdaMax,
    SharpnessEma,
}

impl Signal {
    /// Every signal, in the order the language reference lists them.
    pub const ALL: [Signal; 5] = [
        Signal::Step,
        Signal::Epoch,
        Signal::Progress,
        Signal::LambdaMax,
        Signal::SharpnessEma,
    ];

    /// The name a recipe uses.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Step => "step",
            Signal::Epoch => "epoch",
            Signal::Progress => "progress",
            Signal::LambdaMax => "lambda_max",
            Signal::SharpnessEma => "sharpness_ema",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Signal::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// The values of the signals at one step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    pub step: f64,
    pub epoch: f64,
    pub progress: f64,
    pub lambda_max: f64,
    /// The smoothed log-sharpness.
    pub sharpness_ema: f64,
}

/// An arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
            Op::Div => a / b,
        }
    }
}

/// A built-in function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Log,
    Exp,
    Sqrt,
    Abs,
    Min,
    Max,
    Pow,
}

impl Func {
    /// Every function, in the order the language reference lists them.
    pub const ALL: [Func; 7] = [
        Func::Log,
        Func::Exp,
        Func::Sqrt,
        Func::Abs,
        Func::Min,
        Func::Max,
        Func::Pow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Func::Log => "log",
            Func::Exp => "exp",
            Func::Sqrt => "sqrt",
            Func::Abs => "abs",
            Func::Min => "min",
            Func::Max => "max",
            Func::Pow => "pow",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Func::ALL.into_iter().find(|f| f.name() == s)
    }

    /// How many arguments it takes.
    pub fn arity(self) -> usize {
        match self {
            Func::Min | Func::Max | Func::Pow => 2,
            _ => 1,
        }
    }

    /// The value at `args`; NaN when the count is wrong.
    pub fn apply(self, args: &[f64]) -> f64 {
        match (self, args) {
            (Func::Log, [x]) => x.ln(),
            (Func::Exp, [x]) => x.exp(),
            (Func::Sqrt, [x]) => x.sqrt(),
            (Func::Abs, [x]) => x.abs(),
            (Func::Min, [a, b]) => a.min(*b),
            (Func::Max, [a, b]) => a.max(*b),
            (Func::Pow, [a, b]) => a.powf(*b),
            _ => f64::NAN,
        }
    }
}

/// An expression over signals, with constants folded.
#[derive(Clone, Debug, PartialEq)]
pub enum SignalExpr {
    Const(f64),
    Signal(Signal),
    Neg(Box<SignalExpr>),
    Bin(Op, Box<SignalExpr>, Box<SignalExpr>),
    Call(Func, Vec<SignalExpr>),
}

impl SignalExpr {
    /// Evaluates at the given signals; non-finite results are returned as they are.
    pub fn eval(&self, s: &Signals) -> f64 {
        match self {
            SignalExpr::Const(v) => *v,
            SignalExpr::Signal(sig) => match sig {
                Signal::Step => s.step,
                Signal::Epoch => s.epoch,
                Signal::Progress => s.progress,
                Signal::LambdaMax => s.lambda_max,
                Signal::SharpnessEma => s.sharpness_ema,
            },
            SignalExpr::Neg(e) => -e.eval(s),
            SignalExpr::Bin(op, a, b) => op.apply(a.eval(s), b.eval(s)),
            SignalExpr::Call(f, args) => {
                let v: Vec<f64> = args.iter().map(|a| a.eval(s)).collect();
                f.apply(&v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_against_hand_arithmetic() {
        // 1 + max(lambda_max / 40, step * 0.5) at lambda_max = 20, step = 3 is 1 + 1.5
        let e = SignalExpr::Bin(
            Op::Add,
            Box::new(SignalExpr::Const(1.0)),
            Box::new(SignalExpr::Call(
                Func::Max,
                vec![
                    SignalExpr::Bin(
                        Op::Div,
                        Box::new(SignalExpr::Signal(Signal::LambdaMax)),
                        Box::new(SignalExpr::Const(40.0)),
                    ),
                    SignalExpr::Bin(
                        Op::Mul,
                        Box::new(SignalExpr::Signal(Signal::Step)),
                        Box::new(SignalExpr::Const(0.5)),
                    ),
                ],
            )),
        );
        let s = Signals {
            step: 3.0,
            lambda_max: 20.0,
            ..Default::default()
        };
        assert_eq!(e.eval(&s), 2.5);
        assert!(Func::Log.apply(&[1.0, 2.0]).is_nan(), "wrong arity is NaN");
        for f in Func::ALL {
            assert_eq!(Func::from_name(f.name()), Some(f));
        }
    }
}
