//! What the examples share: their command lines ([`cli`], clap), data loading, the masked-weight
//! check, and one epoch with its evaluation. Plots come from the CLI's plotter
//! (`burn_sparse_cli::plot`).

pub mod cli;

/// Print an error and exit with status 1.
pub fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}

/// MNIST, or Fashion-MNIST with `--fashion`, from `--data-dir`, fetched if missing; exits with
/// the error otherwise.
pub fn load_data(args: &cli::DataArgs) -> burn_sparse::data::Splits {
    use burn_sparse::data::{FashionMnist, Mnist};
    let data = if args.fashion {
        FashionMnist::load_or_fetch(&args.data_dir)
    } else {
        Mnist::load_or_fetch(&args.data_dir)
    };
    data.unwrap_or_else(|e| fail(e))
}

/// The device of `--backend`; exits with the error (the backends compiled in) otherwise.
pub fn device(args: &cli::DataArgs) -> burn::tensor::Device {
    burn_sparse::device::device_from_name(&args.backend).unwrap_or_else(|e| fail(e))
}

/// Exit with an error if any masked weight of `model` is non-zero (it never should be).
pub fn check_masked<M: burn::module::Module>(
    optim: &burn_sparse::mask::SparseOptimizer,
    model: &M,
) {
    optim
        .masks()
        .ensure_masked(model)
        .unwrap_or_else(|e| fail(e));
}

/// One epoch of [`burn_sparse::train::train_epoch`] followed by the test accuracy; exits on error.
pub fn epoch_and_eval<M: burn_sparse::models::Classifier>(
    model: M,
    optim: &mut burn_sparse::mask::SparseOptimizer,
    data: &burn_sparse::data::Splits,
    cfg: burn_sparse::train::TrainConfig,
    seed: u64,
    device: &burn::tensor::Device,
) -> (M, burn_sparse::train::EpochReport, f64) {
    epoch_and_eval_augmented(model, optim, data, cfg, seed, Default::default(), device)
}

/// [`epoch_and_eval`] with the training images augmented (`aug`, seeded by the epoch's seed).
pub fn epoch_and_eval_augmented<M: burn_sparse::models::Classifier>(
    model: M,
    optim: &mut burn_sparse::mask::SparseOptimizer,
    data: &burn_sparse::data::Splits,
    cfg: burn_sparse::train::TrainConfig,
    seed: u64,
    aug: burn_sparse::data::Augmentation,
    device: &burn::tensor::Device,
) -> (M, burn_sparse::train::EpochReport, f64) {
    let src = burn_sparse::train::Augmented::for_epoch(&data.train, aug, seed);
    let (model, report) = burn_sparse::train::train_epoch(model, optim, &src, cfg, seed, device)
        .unwrap_or_else(|e| fail(e));
    let acc = burn_sparse::train::accuracy(&model, &data.test, device).unwrap_or_else(|e| fail(e));
    (model, report, acc)
}
