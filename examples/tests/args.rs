//! The examples' command lines: every flag either does what it says or is refused (#18, 7).

use burn_sparse_examples::cli::{
    ComputeArg, DistributionArg, DstArg, DstArgs, LotteryArgs, PerfArgs, QuickstartArgs, RecipeArg,
    SaliencyArg, SnipArgs, WideArgs, WideMethod,
};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

fn parse<P: Parser>(args: &[&str]) -> Result<P, clap::Error> {
    P::try_parse_from(std::iter::once("example").chain(args.iter().copied()))
}

#[test]
fn every_command_line_is_consistent() {
    QuickstartArgs::command().debug_assert();
    DstArgs::command().debug_assert();
    SnipArgs::command().debug_assert();
    LotteryArgs::command().debug_assert();
    PerfArgs::command().debug_assert();
    WideArgs::command().debug_assert();
}

#[test]
fn a_misspelt_flag_is_an_error_with_the_right_spelling() {
    // `quickstart --epoch 1` used to train the default 5 epochs.
    let e = parse::<QuickstartArgs>(&["--epoch", "1"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownArgument);
    assert!(e.to_string().contains("--epochs"), "{e}");
    let e = parse::<DstArgs>(&["--method", "rigel"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidValue);
    assert!(e.to_string().contains("rigl"), "{e}");
    let e = parse::<SnipArgs>(&["--snip-batch", "2"]).unwrap_err();
    assert!(e.to_string().contains("--snip-batches"), "{e}");
}

#[test]
fn both_spellings_of_a_value_give_the_same_run() {
    let a = parse::<QuickstartArgs>(&["--epochs=1", "--sparsity=0.8", "--seed=3"]).unwrap();
    let b =
        parse::<QuickstartArgs>(&["--epochs", "1", "--sparsity", "0.8", "--seed", "3"]).unwrap();
    assert_eq!((a.epochs, a.sparsity, a.seed), (1, 0.8, 3));
    assert_eq!((b.epochs, b.sparsity, b.seed), (1, 0.8, 3));
    let d = parse::<QuickstartArgs>(&[]).unwrap();
    assert_eq!((d.epochs, d.sparsity, d.seed), (5, 0.9, 0));
    assert_eq!(d.data.data_dir, std::path::PathBuf::from("data"));
    assert!(!d.data.fashion);
}

#[test]
fn every_flag_of_dst_mnist_reaches_its_field() {
    let a = parse::<DstArgs>(&[
        "--method",
        "set",
        "--sparsity",
        "0.8",
        "--distribution",
        "er",
        "--epochs",
        "2",
        "--seed",
        "4",
        "--lr",
        "0.05",
        "--batch",
        "64",
        "--weight-decay",
        "0",
        "--delta-t",
        "50",
        "--alpha",
        "0.2",
        "--compute",
        "sparse",
        "--fashion",
        "--data-dir",
        "/tmp/d",
    ])
    .unwrap();
    assert_eq!(a.method, DstArg::Set);
    assert_eq!(a.sparsity, 0.8);
    assert_eq!(a.distribution, Some(DistributionArg::Er));
    assert_eq!((a.epochs, a.seed, a.batch, a.delta_t), (2, 4, 64, 50));
    assert_eq!((a.lr, a.weight_decay, a.alpha), (0.05, 0.0, Some(0.2)));
    assert_eq!(a.compute, ComputeArg::Sparse);
    assert!(a.data.fashion);
    assert_eq!(a.data.data_dir, std::path::PathBuf::from("/tmp/d"));
}

#[test]
fn values_outside_their_range_are_refused() {
    for bad in [
        &["--epochs", "0"][..],
        &["--epochs", "3074457345618258603"],
        &["--sparsity", "1"],
        &["--sparsity", "-0.1"],
        &["--sparsity", "nan"],
        &["--seed", "-1"],
        &["--fashion=maybe"],
        &["extra"],
    ] {
        assert!(
            parse::<QuickstartArgs>(bad).is_err(),
            "quickstart {bad:?} parsed"
        );
    }
    for bad in [
        &["--lr", "0"][..],
        &["--lr", "inf"],
        &["--batch", "0"],
        &["--alpha", "1.5"],
        &["--delta-t", "0"],
        &["--weight-decay", "-1"],
        &["--compute", "gpu"],
        &["--model", "resnet"],
    ] {
        assert!(parse::<DstArgs>(bad).is_err(), "dst_mnist {bad:?} parsed");
    }
    for bad in [
        &["--snip-batches", "0"][..],
        &["--rounds", "0"],
        &["--shift", "16"],
        &["--init-scale", "0"],
        &["--method", "rigl"],
    ] {
        assert!(parse::<SnipArgs>(bad).is_err(), "snip_mnist {bad:?} parsed");
    }
    for bad in [
        &["--levels", "0"][..],
        &["--global", "2"],
        &["--recipe", "adam"],
        &["--lmc", "-1"],
    ] {
        assert!(
            parse::<LotteryArgs>(bad).is_err(),
            "lottery_mnist {bad:?} parsed"
        );
    }
    assert!(
        parse::<PerfArgs>(&["--rounds", "3"]).is_err(),
        "--rounds without --amortised"
    );
    assert!(parse::<PerfArgs>(&["--amortised", "--snip-only"]).is_err());
    assert!(
        parse::<PerfArgs>(&["--sparse"]).is_err(),
        "--sparse without --amortised"
    );
}

#[test]
fn the_other_examples_parse_their_flags() {
    let s = parse::<SnipArgs>(&["--method", "synflow", "--rounds", "10", "--shift", "0"]).unwrap();
    assert_eq!(
        (s.method, s.rounds, s.shift),
        (SaliencyArg::Synflow, Some(10), 0)
    );
    let l =
        parse::<LotteryArgs>(&["--recipe", "lth-adam", "--global", "0.2", "--lmc", "3"]).unwrap();
    assert_eq!(
        (l.recipe, l.global, l.lmc),
        (RecipeArg::LthAdam, Some(0.2), Some(3))
    );
    // Truly sparse layers for pruning at init and for every IMP level; masked by default.
    assert_eq!(s.compute, ComputeArg::Masked);
    assert_eq!(l.compute, ComputeArg::Masked);
    let s = parse::<SnipArgs>(&["--compute", "sparse"]).unwrap();
    assert_eq!(s.compute, ComputeArg::Sparse);
    let l = parse::<LotteryArgs>(&["--compute=sparse"]).unwrap();
    assert_eq!(l.compute, ComputeArg::Sparse);
    assert!(parse::<LotteryArgs>(&["--compute", "csr"]).is_err());
    let p = parse::<PerfArgs>(&["--amortised", "--rounds", "3"]).unwrap();
    assert!(p.amortised && p.rounds == 3 && !p.snip_only && !p.sparse);
    let p = parse::<PerfArgs>(&["--amortised", "--sparse"]).unwrap();
    assert!(p.amortised && p.sparse);
}

#[test]
fn wide_mnist_flags_reach_their_fields_and_bad_values_are_refused() {
    let a = parse::<WideArgs>(&[
        "--method",
        "set",
        "--width",
        "65536",
        "--nnz-per-layer=2000000",
        "--epochs",
        "2",
        "--delta-t",
        "50",
        "--init",
        "dense",
        "--fashion",
    ])
    .unwrap();
    assert_eq!(a.method, WideMethod::Set);
    assert_eq!(
        (a.width, a.nnz_per_layer, a.epochs, a.delta_t),
        (65536, 2_000_000, 2, Some(50))
    );
    assert!(a.data.fashion);
    let d = parse::<WideArgs>(&[]).unwrap();
    assert_eq!((d.method, d.width, d.batch), (WideMethod::Rigl, 16384, 128));
    for bad in [
        &["--width", "0"][..],
        &["--nnz-per-layer", "0"],
        &["--method", "snfs"],
        &["--delta-t", "0"],
        &["--lr", "-1"],
        &["--widht", "8"],
    ] {
        assert!(parse::<WideArgs>(bad).is_err(), "{bad:?}");
    }
}
