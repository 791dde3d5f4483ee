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

/// [`epoch_and_eval_augmented`] for truly sparse layers: one epoch of
/// [`burn_sparse::train::train_epoch_sparse`] (with `dst`'s topology updates, if any) followed
/// by the test accuracy; exits on error.
#[allow(clippy::too_many_arguments)]
pub fn sparse_epoch_and_eval(
    net: burn_sparse::models::SparseMlp,
    optim: &mut burn_sparse::mask::SparseOptimizer,
    dst: Option<&mut burn_sparse::sparse_dst::SparseDst>,
    data: &burn_sparse::data::Splits,
    cfg: burn_sparse::train::TrainConfig,
    seed: u64,
    aug: burn_sparse::data::Augmentation,
    device: &burn::tensor::Device,
) -> (
    burn_sparse::models::SparseMlp,
    burn_sparse::train::EpochReport,
    f64,
) {
    let src = burn_sparse::train::Augmented::for_epoch(&data.train, aug, seed);
    let (net, report) =
        burn_sparse::train::train_epoch_sparse(net, optim, dst, &src, cfg, seed, device)
            .unwrap_or_else(|e| fail(e));
    let acc = burn_sparse::train::accuracy(&net, &data.test, device).unwrap_or_else(|e| fail(e));
    (net, report, acc)
}

/// Print which layers of `net` run on the sparse kernels (the others compute masked-dense).
pub fn print_sparse_layers(net: &burn_sparse::models::SparseMlp) {
    let kernels: Vec<bool> = net.layers.iter().map(|l| l.uses_kernels()).collect();
    println!(
        "sparse layers: {} non-zeros, on the sparse kernels: {kernels:?}",
        net.nnz()
    );
}
