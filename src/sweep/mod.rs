//! Sweeps: comparisons across seeds and the summary files of an experiment.

pub mod stats;
pub mod summary;
