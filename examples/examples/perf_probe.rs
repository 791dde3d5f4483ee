//! A minimal reproduction of where a LeNet-5 / LeNet-300-100 training step spends its time on
//! a CPU backend: each layer's forward, and forward + backward, timed separately (median of N).
//!
//! ```text
//! cargo run --release --example perf_probe -- [--backend flex] [--reps 20]
//! ```

use std::time::Instant;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Distribution, Tensor};
use burn_sparse::device::device_from_name;
use burn_sparse::mask::to_host;
use burn_sparse_examples::{Args, fail};

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn sync(t: Tensor<1>) {
    let _ = to_host(t);
}

fn main() {
    let args = Args::parse("perf_probe [--backend flex] [--reps 20]");
    let d: Device = device_from_name(&args.str("backend", "flex")).unwrap_or_else(|e| fail(e));
    let reps: usize = args.get("reps", 20);
    let b = 128;
    println!(
        "{:<44} {:>10} {:>14}",
        "op (batch 128)", "fwd ms", "fwd+bwd ms"
    );
    let convs = [
        ("conv 1->20 5x5 on 28x28", 1, 20, 28),
        ("conv 20->50 5x5 on 12x12", 20, 50, 12),
    ];
    for (name, cin, cout, hw) in convs {
        let conv = Conv2dConfig::new([cin, cout], [5, 5]).init(&d);
        let x = Tensor::<4>::random([b, cin, hw, hw], Distribution::Normal(0.0, 1.0), &d);
        let f = median_ms(reps, || sync(conv.forward(x.clone()).sum()));
        let fb = median_ms(reps, || {
            let g = conv.forward(x.clone()).sum().backward();
            let _ = conv.weight.grad(&g).map(|g| sync(g.sum()));
        });
        println!("{name:<44} {f:>10.3} {fb:>14.3}");
    }
    for (name, i, o) in [
        ("linear 784->300", 784, 300),
        ("linear 800->500", 800, 500),
        ("linear 300->100", 300, 100),
    ] {
        let l = LinearConfig::new(i, o).init(&d);
        let x = Tensor::<2>::random([b, i], Distribution::Normal(0.0, 1.0), &d);
        let f = median_ms(reps, || sync(l.forward(x.clone()).sum()));
        let fb = median_ms(reps, || {
            let g = l.forward(x.clone()).sum().backward();
            let _ = l.weight.grad(&g).map(|g| sync(g.sum()));
        });
        println!("{name:<44} {f:>10.3} {fb:>14.3}");
    }
    let pool = burn::nn::pool::MaxPool2dConfig::new([2, 2])
        .with_strides([2, 2])
        .init();
    let x = Tensor::<4>::random([b, 20, 24, 24], Distribution::Normal(0.0, 1.0), &d).require_grad();
    let f = median_ms(reps, || sync(pool.forward(x.clone()).sum()));
    let fb = median_ms(reps, || {
        let g = pool.forward(x.clone()).sum().backward();
        let _ = x.grad(&g).map(|g| sync(g.sum()));
    });
    println!("{:<44} {f:>10.3} {fb:>14.3}", "max-pool 2x2 on 20x24x24");
    let _ = d.clone().autodiff().is_autodiff();
    let _ = Module::num_params(&LinearConfig::new(1, 1).init(&d));
}
