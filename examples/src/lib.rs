//! Shared flag parsing for the examples (no dependency beyond std).

use std::collections::HashMap;

/// `--key value` and `--flag` arguments.
#[derive(Debug, Default)]
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    /// Parse `std::env::args()`; exits with a message on a malformed command line.
    pub fn parse(usage: &str) -> Self {
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(key) = a.strip_prefix("--") else {
                eprintln!("unexpected argument `{a}`\n{usage}");
                std::process::exit(2);
            };
            let val = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "true".to_string(),
            };
            map.insert(key.to_string(), val);
        }
        Self { map }
    }

    /// A string flag with a default.
    pub fn str(&self, key: &str, default: &str) -> String {
        self.map
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    /// A parsed flag with a default; exits with a message on a bad value.
    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.map.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("bad value `{v}` for --{key}");
                std::process::exit(2);
            }),
        }
    }

    /// Whether a boolean flag is present.
    pub fn flag(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| v != "false")
    }
}

/// Print an error and exit with status 1.
pub fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}

/// A small SVG line plot (no dependency): one polyline and legend entry per series, optional
/// log-scale x axis, ticks at the data's x values.
pub fn svg_line_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    log_x: bool,
) -> String {
    let (w, h, l, r, t, b) = (720.0, 460.0, 70.0, 170.0, 40.0, 60.0);
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    if pts.is_empty() {
        return String::from("<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    }
    let fx = |x: f64| if log_x { x.max(1e-12).log10() } else { x };
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for &(x, y) in &pts {
        x0 = x0.min(fx(x));
        x1 = x1.max(fx(x));
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(0.05);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| l + (fx(x) - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| t + (y1 - y) / (y1 - y0) * (h - t - b);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n\
         <line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{y_label}</text>\n",
        (l + w - r) / 2.0,
        h - b,
        w - r,
        h - b,
        h - b,
        (l + w - r) / 2.0,
        h - 15.0,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    );
    for i in 0..=5 {
        let y = y0 + (y1 - y0) * i as f64 / 5.0;
        s += &format!(
            "<line x1=\"{}\" y1=\"{:.1}\" x2=\"{l}\" y2=\"{:.1}\" stroke=\"black\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.2}</text>\n",
            l - 4.0,
            py(y),
            py(y),
            l - 6.0,
            py(y) + 4.0
        );
    }
    let mut xs: Vec<f64> = series
        .first()
        .map(|s| s.1.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    xs.dedup();
    let step = (xs.len() / 8).max(1);
    for x in xs.iter().step_by(step) {
        s += &format!(
            "<line x1=\"{:.1}\" y1=\"{}\" x2=\"{:.1}\" y2=\"{}\" stroke=\"black\"/><text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            px(*x),
            h - b,
            px(*x),
            h - b + 4.0,
            px(*x),
            h - b + 18.0,
            if *x >= 10.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        );
    }
    for (i, (name, p)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let line: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
            line.join(" ")
        );
        for &(x, y) in p {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n",
                px(x),
                py(y)
            );
        }
        let ly = t + 20.0 + 20.0 * i as f64;
        s += &format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            w - r + 10.0,
            w - r + 35.0,
            w - r + 40.0,
            ly + 4.0
        );
    }
    s + "</svg>\n"
}

/// MNIST, or Fashion-MNIST with `--fashion`, from `--data-dir` (default `data`), fetched if
/// missing; exits with the error otherwise.
pub fn load_data(args: &Args) -> burn_sparse::data::Splits {
    use burn_sparse::data::{FashionMnist, Mnist};
    let dir = args.str("data-dir", "data");
    let data = if args.flag("fashion") {
        FashionMnist::load_or_fetch(&dir)
    } else {
        Mnist::load_or_fetch(&dir)
    };
    data.unwrap_or_else(|e| fail(e))
}

/// Exit with an error if any masked weight of `model` is non-zero (it never should be).
pub fn check_masked<M: burn::module::Module>(
    optim: &burn_sparse::mask::SparseOptimizer,
    model: &M,
) {
    let bad: usize = optim
        .masks()
        .violations(model)
        .unwrap_or_else(|e| fail(e))
        .iter()
        .map(|v| v.1)
        .sum();
    if bad != 0 {
        fail(format!("{bad} masked weights are non-zero"));
    }
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
