//! # burn-sparse-lottery
//!
//! Lottery tickets by iterative magnitude pruning (Frankle & Carbin 2019, arXiv:1803.03635)
//! with rewinding to init or to step k (Frankle et al. 2020, arXiv:1912.05671), the random
//! reinit and random pruning baselines, and linear mode connectivity / instability.
//!
//! Each level trains, prunes `p` of the remaining weights by `|w|` (globally, or per layer as in
//! the LTH paper: 20% for fc layers and 10% for the output layer), rewinds the survivors, and
//! resets the optimizer state (or, by [`Retrain`], keeps the trained weights and fine-tunes at a
//! constant rate or replays the learning-rate schedule: Renda et al. 2020, arXiv:2003.02389); masked weights stay exactly 0 through every step. After each
//! level, its mask, final weights and metrics are written atomically into the run directory
//! (`rewind.bpk` once, then `level_NN/{masks.bsp, final.bpk, metrics.json}`, metrics last), and
//! a rerun skips every level whose metrics exist, as OpenLTH does.
//!
//! Training is the caller's: implement [`ImpTrainer`] (the facade `burn-sparse` has one for
//! its models and datasets).

mod error;
mod imp;
mod lmc;

pub use error::{LotteryError, Result, TrainerError};
pub use imp::{
    Capture, Imp, ImpConfig, ImpTrainer, LevelMetrics, PruneRate, Retrain, Rewind, Variant,
    load_masks, prune_level, prune_level_structured, random_pruning, save_masks,
};
pub use lmc::{LmcReport, interpolate, linear_mode_connectivity};
