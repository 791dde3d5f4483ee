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

/// A run on truly sparse layers: the [`burn_sparse::models::SparseMlp`] of a masked
/// LeNet-300-100, an optimizer of its values (nnz-sized state) and, for SET/RigL/static, the
/// topology updater of the DST plan.
pub struct SparseRun {
    /// The network.
    pub net: burn_sparse::models::SparseMlp,
    /// The values' optimizer.
    pub optim: burn_sparse::mask::SparseOptimizer,
    /// The topology updater (None: the mask stays fixed).
    pub dst: Option<burn_sparse::sparse_dst::SparseDst>,
}

impl SparseRun {
    /// The sparse twin of `model` under `masks`, its optimizer of `rule`, and `plan`'s updater;
    /// prints which layers run on the kernels. Exits on error.
    pub fn new(
        model: &burn_sparse::models::LeNet300,
        masks: &burn_sparse::mask::MaskSet,
        rule: impl Into<burn_sparse::mask::Rule>,
        plan: Option<&burn_sparse::dynamic::DstPlan>,
    ) -> Self {
        use burn_sparse::layers::Compute;
        let net = burn_sparse::models::SparseMlp::from_lenet300(model, masks, Compute::Auto)
            .unwrap_or_else(|e| fail(e));
        let kernels: Vec<bool> = net.layers.iter().map(|l| l.uses_kernels()).collect();
        println!(
            "sparse layers: {} non-zeros, on the sparse kernels: {kernels:?}",
            net.nnz()
        );
        let optim =
            burn_sparse::mask::SparseOptimizer::new(rule, burn_sparse::mask::MaskSet::empty())
                .unwrap_or_else(|e| fail(e));
        let dst = plan.and_then(|p| {
            burn_sparse::sparse_dst::SparseDst::from_plan(p).unwrap_or_else(|e| fail(e))
        });
        Self { net, optim, dst }
    }

    /// One epoch of [`burn_sparse::train::train_epoch_sparse`] (training images augmented by
    /// `aug`, seeded by `seed`) and the test accuracy; exits on error.
    pub fn epoch(
        &mut self,
        data: &burn_sparse::data::Splits,
        cfg: burn_sparse::train::TrainConfig,
        seed: u64,
        aug: burn_sparse::data::Augmentation,
        device: &burn::tensor::Device,
    ) -> (burn_sparse::train::EpochReport, f64) {
        let src = burn_sparse::train::Augmented::for_epoch(&data.train, aug, seed);
        let (net, report) = burn_sparse::train::train_epoch_sparse(
            self.net.clone(),
            &mut self.optim,
            self.dst.as_mut(),
            &src,
            cfg,
            seed,
            device,
        )
        .unwrap_or_else(|e| fail(e));
        self.net = net;
        let acc =
            burn_sparse::train::accuracy(&self.net, &data.test, device).unwrap_or_else(|e| fail(e));
        (report, acc)
    }
}
