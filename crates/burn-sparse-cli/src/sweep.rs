//! `compare`: a grid of methods x sparsities x seeds over one base config, each point a normal
//! (resumable, skippable) run, summarised as a Markdown table of mean ± std with plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{
    ExperimentConfig, Format, MethodName, first_duplicate, load_file, load_text, spelling,
};
use crate::error::{Error, MAX_TEXT_FILE, Result, read_at_most, write_atomic};
use crate::plot::{Series, bar_chart, line_chart};
use crate::run::{LevelRow, Outcome, RunResult, Runner, churn_by_step};

/// The grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Methods (dense runs once per seed, whatever the sparsities).
    pub methods: Vec<MethodName>,
    /// Sparsities.
    pub sparsities: Vec<f64>,
    /// Seeds.
    pub seeds: Vec<u64>,
}

/// Where the summary goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Directory of the table, CSV/JSON and plots.
    pub dir: String,
    /// Also write the Markdown report here (e.g. `docs/RESULTS.md`).
    pub markdown: Option<String>,
    /// Title of the report.
    pub title: String,
    /// The sparsity whose training curves, layer densities and churn are plotted (None: the
    /// highest of the grid).
    pub detail_sparsity: Option<f64>,
    /// Also put the summary table into this file (e.g. `README.md`), replacing what is between
    /// the lines `<!-- results:begin -->` and `<!-- results:end -->`.
    pub readme: Option<String>,
    /// Write the report as a named section of `output.markdown` instead of the whole file:
    /// between `<!-- section NAME begin -->` and `<!-- section NAME end -->` (replaced if there,
    /// appended if not), its headings one level down. A sweep without a section rewrites the
    /// file and keeps every section already in it, so several sweeps share one results page.
    pub section: Option<String>,
}

/// The markers around a named section of a shared Markdown report.
pub fn section_markers(name: &str) -> (String, String) {
    (
        format!("<!-- section {name} begin -->"),
        format!("<!-- section {name} end -->"),
    )
}

/// The markers between which `output.readme` receives the summary table.
pub const README_MARKERS: (&str, &str) = ("<!-- results:begin -->", "<!-- results:end -->");

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            dir: "runs/compare".into(),
            markdown: None,
            title: "burn-sparse results".into(),
            detail_sparsity: None,
            readme: None,
            section: None,
        }
    }
}

/// A sweep file: a base experiment, a grid and an output section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// The config every grid point starts from.
    #[serde(default)]
    pub base: ExperimentConfig,
    /// The grid.
    pub grid: Grid,
    /// The outputs.
    #[serde(default)]
    pub output: OutputConfig,
}

impl SweepConfig {
    /// Read a `.toml` or `.json` sweep file with overrides (`base.epochs=2`), decode, validate.
    ///
    /// # Errors
    /// [`Error::Parse`], [`Error::Io`], [`Error::Config`] naming the field.
    pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Self> {
        load_file(path, overrides, Self::validate)
    }

    /// As [`SweepConfig::load`], from text.
    ///
    /// # Errors
    /// As [`SweepConfig::load`].
    pub fn from_text(
        text: &str,
        format: Format,
        origin: &str,
        overrides: &[(String, String)],
    ) -> Result<Self> {
        load_text(text, format, origin, overrides, Self::validate)
    }

    /// Every grid point's config must be valid, and the grid non-empty.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let empty = |f: &str| Error::Config {
            field: f.into(),
            message: "is empty".into(),
        };
        if self.grid.methods.is_empty() {
            return Err(empty("grid.methods"));
        }
        if self.grid.seeds.is_empty() {
            return Err(empty("grid.seeds"));
        }
        let twice = |f: &str, v: String| Error::Config {
            field: f.into(),
            message: format!("{v} is listed twice (each grid point runs once)"),
        };
        if let Some(m) = first_duplicate(&self.grid.methods) {
            return Err(twice("grid.methods", format!("`{m}`")));
        }
        if let Some(s) = first_duplicate(&self.grid.sparsities) {
            return Err(twice("grid.sparsities", s.to_string()));
        }
        if let Some(s) = first_duplicate(&self.grid.seeds) {
            return Err(twice("grid.seeds", format!("seed {s}")));
        }
        if let Some(name) = &self.output.section {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::Config {
                    field: "output.section".into(),
                    message: format!("`{name}`: use letters, digits, `-` and `_`"),
                });
            }
            if self.output.markdown.is_none() {
                return Err(Error::Config {
                    field: "output.section".into(),
                    message: "is a section of `output.markdown`, which is not set".into(),
                });
            }
        }
        let sparse = self.grid.methods.iter().any(|m| *m != MethodName::Dense);
        if sparse && self.grid.sparsities.is_empty() {
            return Err(empty("grid.sparsities"));
        }
        for (i, s) in self.grid.sparsities.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0 && *s < 1.0) {
                return Err(Error::Config {
                    field: format!("grid.sparsities[{i}]"),
                    message: format!("{s} is outside (0, 1)"),
                });
            }
        }
        for c in self.points() {
            c.validate().map_err(|e| match e {
                Error::Config { field, message } => Error::Config {
                    field: format!("base.{field} (at {} {})", c.method, c.sparsity),
                    message,
                },
                e => e,
            })?;
        }
        Ok(())
    }

    /// The single-seed configs of the grid, in order (method, sparsity, seed).
    pub fn points(&self) -> Vec<ExperimentConfig> {
        let mut out = Vec::new();
        for &m in &self.grid.methods {
            let sparsities: Vec<f64> = if m == MethodName::Dense {
                vec![0.0]
            } else {
                self.grid.sparsities.clone()
            };
            for &s in &sparsities {
                for &seed in &self.grid.seeds {
                    out.push(ExperimentConfig {
                        method: m,
                        sparsity: s,
                        seeds: vec![seed],
                        ..self.base.clone()
                    });
                }
            }
        }
        out
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// What `compare` wrote.
#[derive(Debug, Clone)]
pub struct SweepReport {
    /// Every run's result.
    pub results: Vec<RunResult>,
    /// The Markdown report (also written to `output.dir/results.md`).
    pub markdown: String,
    /// Files written.
    pub files: Vec<PathBuf>,
}

fn key(s: f64) -> i64 {
    (s * 1e6).round() as i64
}

fn relative(from_dir: &Path, to: &Path) -> String {
    let from_dir = if from_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        from_dir
    };
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (a, b) = (abs(from_dir), abs(to));
    let ac: Vec<_> = a.components().collect();
    let bc: Vec<_> = b.components().collect();
    let common = ac.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    let mut p = PathBuf::new();
    for _ in common..ac.len() {
        p.push("..");
    }
    for c in &bc[common..] {
        p.push(c.as_os_str());
    }
    p.to_string_lossy().replace('\\', "/")
}

/// Run the grid (skipping finished points, resuming killed ones) and write the summary.
/// `command` is quoted in the report as the command that produced it.
///
/// # Errors
/// The first failing run's error, or an I/O / plot error.
pub fn compare(runner: &mut Runner, sweep: &SweepConfig, command: &str) -> Result<SweepReport> {
    compare_shard(runner, sweep, command, None)?.ok_or_else(|| Error::Config {
        field: "<shard>".into(),
        message: "unreachable: no shard".into(),
    })
}

/// Run only the grid points `i` with `i % n == k` for `shard = Some((k, n))` (one process per
/// core), and write no summary (returns None); `None` runs everything and summarises, finding
/// the shards' runs finished.
///
/// # Errors
/// As [`compare`]; a shard with `k >= n` is [`Error::Config`].
pub fn compare_shard(
    runner: &mut Runner,
    sweep: &SweepConfig,
    command: &str,
    shard: Option<(usize, usize)>,
) -> Result<Option<SweepReport>> {
    sweep.validate()?;
    let points = sweep.points();
    if let Some((k, m)) = shard {
        run_shard(runner, &points, k, m)?;
        return Ok(None);
    }
    let results = run_grid(runner, &points)?;
    let out_dir = PathBuf::from(&sweep.output.dir);
    create_dir(&out_dir)?;
    let mut files = write_raw(&out_dir, &results)?;
    let agg = Aggregate::new(sweep, &results);
    let (plots, images) = draw_plots(runner, sweep, &agg, &out_dir.join("plots"))?;
    files.extend(plots);
    let md_dir = markdown_dir(sweep, &out_dir);
    let report = Report::new(sweep, command, &agg, &images, &md_dir);
    files.extend(write_reports(
        sweep,
        &out_dir,
        &md_dir,
        &report.text,
        &images,
    )?);
    if let Some(readme) = &sweep.output.readme {
        files.push(splice_readme(
            Path::new(readme),
            sweep,
            command,
            &report.table,
            &out_dir,
        )?);
    }
    Ok(Some(SweepReport {
        results,
        markdown: report.text,
        files,
    }))
}

fn create_dir(d: &Path) -> Result<()> {
    std::fs::create_dir_all(d).map_err(|e| Error::Io {
        path: d.to_path_buf(),
        source: e,
    })
}

/// Grid: one shard's points.
fn run_shard(runner: &mut Runner, points: &[ExperimentConfig], k: usize, m: usize) -> Result<()> {
    if m == 0 || k >= m {
        return Err(Error::Config {
            field: "--shard".into(),
            message: format!("{k}/{m}: needs K/N with K < N"),
        });
    }
    run_points(runner, points, |i| i % m == k)?;
    crate::progress::out(&format!(
        "shard {k}/{m} done; run without --shard to write the summary"
    ));
    Ok(())
}

/// Grid: every point, in order (finished ones are read, killed ones resumed).
fn run_grid(runner: &mut Runner, points: &[ExperimentConfig]) -> Result<Vec<RunResult>> {
    run_points(runner, points, |_| true)
}

/// Run the points `i` that `pick(i)` selects, one status line each.
fn run_points(
    runner: &mut Runner,
    points: &[ExperimentConfig],
    pick: impl Fn(usize) -> bool,
) -> Result<Vec<RunResult>> {
    let n = points.len();
    let mut results = Vec::new();
    for (i, c) in points.iter().enumerate().filter(|(i, _)| pick(*i)) {
        let o: Outcome = runner.run_one(c)?;
        let how = if o.already_done {
            " (already finished)".to_string()
        } else if let Some(e) = o.resumed_from {
            format!(" (resumed after {e})")
        } else {
            String::new()
        };
        crate::progress::out(&format!(
            "[{}/{n}] {} {:.2}%{how}",
            i + 1,
            o.result.name,
            o.result.test_accuracy
        ));
        results.push(o.result);
    }
    Ok(results)
}

/// Every run's row: `results.csv` and `results.json`.
fn write_raw(out_dir: &Path, results: &[RunResult]) -> Result<Vec<PathBuf>> {
    let mut csv = String::from("method,sparsity,seed,test_accuracy,density,nnz,seconds,run\n");
    for r in results {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{:.1},{}",
            r.method, r.sparsity, r.seed, r.test_accuracy, r.density, r.nnz, r.seconds, r.name
        );
    }
    let csv_path = out_dir.join("results.csv");
    write_atomic(&csv_path, csv.as_bytes())?;
    let json_path = out_dir.join("results.json");
    write_atomic(
        &json_path,
        serde_json::to_string_pretty(results)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(vec![csv_path, json_path])
}

/// Aggregate: the runs of each (method, sparsity) cell.
struct Aggregate<'a> {
    groups: BTreeMap<(MethodName, i64), Vec<&'a RunResult>>,
    methods: Vec<MethodName>,
    sparsities: Vec<f64>,
    seeds: usize,
}

impl<'a> Aggregate<'a> {
    fn new(sweep: &SweepConfig, results: &'a [RunResult]) -> Self {
        let mut groups: BTreeMap<(MethodName, i64), Vec<&RunResult>> = BTreeMap::new();
        for r in results {
            groups
                .entry((r.method, key(r.sparsity)))
                .or_default()
                .push(r);
        }
        Self {
            groups,
            methods: sweep.grid.methods.clone(),
            sparsities: sweep.grid.sparsities.clone(),
            seeds: sweep.grid.seeds.len(),
        }
    }

    /// The runs of a cell (dense: its one column, whatever `s`).
    fn runs(&self, m: MethodName, s: f64) -> Vec<&'a RunResult> {
        let k = key(if m == MethodName::Dense { 0.0 } else { s });
        self.groups.get(&(m, k)).cloned().unwrap_or_default()
    }

    /// Mean and std of a cell's test accuracy, and its number of runs.
    fn accuracy(&self, m: MethodName, s: f64) -> Option<(f64, f64, usize)> {
        let rs = self.runs(m, s);
        if rs.is_empty() {
            return None;
        }
        let xs: Vec<f64> = rs.iter().map(|r| r.test_accuracy).collect();
        let (a, b) = mean_std(&xs);
        Some((a, b, xs.len()))
    }

    /// The sparsity whose curves, densities and churn are plotted.
    fn detail(&self, sweep: &SweepConfig) -> Option<f64> {
        sweep.output.detail_sparsity.or_else(|| {
            self.sparsities
                .iter()
                .copied()
                .fold(None, |a: Option<f64>, s| Some(a.map_or(s, |a| a.max(s))))
        })
    }
}

/// A chart the report embeds: its title and PNG.
type Image = (String, PathBuf);

/// Plots: every chart of the sweep, with the images the report embeds.
fn draw_plots(
    runner: &Runner,
    sweep: &SweepConfig,
    agg: &Aggregate,
    plot_dir: &Path,
) -> Result<(Vec<PathBuf>, Vec<Image>)> {
    let mut files = Vec::new();
    let mut images: Vec<Image> = Vec::new();
    let mut chart = |files_of: Vec<PathBuf>, title: &str, stem: &Path| {
        files.extend(files_of);
        images.push((title.into(), stem.with_extension("png")));
    };
    let series = accuracy_series(agg);
    if !series.is_empty() {
        let stem = plot_dir.join("accuracy_vs_sparsity");
        let f = line_chart(
            &stem,
            "Test accuracy versus weights remaining",
            "weights remaining (%, log scale)",
            "test accuracy (%)",
            &series,
            true,
        )?;
        chart(f, "Accuracy versus sparsity", &stem);
    }
    let Some(ds) = agg.detail(sweep) else {
        return Ok((files, images));
    };
    // Mean accuracy over training.
    let mut curves = Vec::new();
    for &m in &agg.methods {
        let rs = agg.runs(m, ds);
        let len = rs.iter().map(|r| r.curve.len()).min().unwrap_or(0);
        if len == 0 {
            continue;
        }
        let pts = (0..len)
            .map(|e| {
                let xs: Vec<f64> = rs.iter().map(|r| r.curve[e]).collect();
                ((e + 1) as f64, mean_std(&xs).0)
            })
            .collect();
        curves.push(Series::new(m.to_string(), pts).with_color(m.index()));
    }
    if !curves.is_empty() {
        let stem = plot_dir.join("accuracy_over_training");
        let f = line_chart(
            &stem,
            &format!(
                "Test accuracy over training ({:.0}% sparse; dense)",
                100.0 * ds
            ),
            "epoch",
            "test accuracy (%)",
            &curves,
            false,
        )?;
        chart(f, "Accuracy over training", &stem);
    }
    // Per-layer density.
    let mut layers: Vec<String> = Vec::new();
    let mut bars = Vec::new();
    for &m in agg.methods.iter().filter(|m| **m != MethodName::Dense) {
        let rs = agg.runs(m, ds);
        let Some(first) = rs.first() else { continue };
        if layers.is_empty() {
            layers = first.layer_density.keys().cloned().collect();
        }
        let vals = layers
            .iter()
            .map(|l| {
                let xs: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| r.layer_density.get(l).copied())
                    .collect();
                mean_std(&xs).0
            })
            .collect();
        bars.push((m.to_string(), vals, Some(m.index())));
    }
    if !bars.is_empty() {
        let stem = plot_dir.join("layer_density");
        let f = bar_chart(
            &stem,
            &format!("Density per layer at {:.0}% sparsity", 100.0 * ds),
            "kept fraction",
            &layers,
            &bars,
        )?;
        chart(f, "Per-layer density", &stem);
    }
    // Mask churn of the dynamic methods (first seed's run).
    let mut churn = Vec::new();
    for &m in agg.methods.iter().filter(|m| m.is_dynamic()) {
        let Some(r) = agg.runs(m, ds).into_iter().next() else {
            continue;
        };
        let pts = churn_by_step(&runner.updates_of(&r.name)?);
        if !pts.is_empty() {
            churn.push(Series::new(m.to_string(), pts).with_color(m.index()));
        }
    }
    if !churn.is_empty() {
        let stem = plot_dir.join("churn");
        let f = line_chart(
            &stem,
            &format!("Mask churn per update at {:.0}% sparsity", 100.0 * ds),
            "optimizer step",
            "connections changed / kept",
            &churn,
            false,
        )?;
        chart(f, "Mask churn of the dynamic methods", &stem);
    }
    Ok((files, images))
}

/// Plots: accuracy against the weights remaining, one series per sparse method, dense flat.
fn accuracy_series(agg: &Aggregate) -> Vec<Series> {
    let mut series = Vec::new();
    for &m in agg.methods.iter().filter(|m| **m != MethodName::Dense) {
        let mut pts = Vec::new();
        let mut errs = Vec::new();
        for &s in &agg.sparsities {
            if let Some((a, sd, _)) = agg.accuracy(m, s) {
                pts.push((100.0 * (1.0 - s), a));
                errs.push(sd);
            }
        }
        if !pts.is_empty() {
            series.push(Series {
                name: m.to_string(),
                points: pts,
                errors: errs,
                color: Some(m.index()),
            });
        }
    }
    if let Some((a, _, _)) = agg.accuracy(MethodName::Dense, 0.0) {
        let xs: Vec<f64> = agg.sparsities.iter().map(|s| 100.0 * (1.0 - s)).collect();
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() {
            series.push(
                Series::new("dense", vec![(lo, a), (hi, a)]).with_color(MethodName::Dense.index()),
            );
        }
    }
    series
}

/// Markdown: the report's text, and its summary table alone (for the README).
struct Report {
    text: String,
    table: String,
}

impl Report {
    fn new(
        sweep: &SweepConfig,
        command: &str,
        agg: &Aggregate,
        images: &[Image],
        md_dir: &Path,
    ) -> Self {
        let mut md = header(sweep, command);
        let table = summary_table(agg);
        md.push_str(&table);
        if agg.methods.contains(&MethodName::Dense) {
            let _ = writeln!(
                md,
                "\nDense has no sparsity; its row repeats the same runs in every column."
            );
        }
        if let Some((a, sd, _)) = agg
            .accuracy(MethodName::Dense, 0.0)
            .filter(|_| agg.sparsities.is_empty())
        {
            let _ = writeln!(md, "\ndense: {a:.2} ± {sd:.2}");
        }
        let flops = flops_table(agg);
        if !flops.is_empty() {
            let _ = writeln!(
                md,
                "\n## FLOPs\n\nMultiply-adds of the prunable layers relative to dense, counted as \
                 the RigL paper does: forward at each step's densities, twice that backward, the \
                 dense weight gradient on the steps that compute it, and for the lottery every \
                 IMP level's training against one dense training.\n\n{flops}"
            );
        }
        md.push_str(&lottery_levels(agg));
        if !images.is_empty() {
            let _ = writeln!(md, "\n## Plots\n");
            for (title, png) in images {
                let _ = writeln!(md, "### {title}\n\n![{title}]({})\n", relative(md_dir, png));
            }
        }
        Self { text: md, table }
    }
}

/// Markdown: title, provenance and the recipe.
fn header(sweep: &SweepConfig, command: &str) -> String {
    let mut md = String::new();
    let lottery = sweep.grid.methods.contains(&MethodName::Lottery);
    let _ = writeln!(md, "# {}\n", sweep.output.title);
    let _ = writeln!(
        md,
        "<!-- Generated by `burn-sparse compare`; edit the sweep file and rerun instead of \
         editing this file. -->\n"
    );
    let _ = writeln!(md, "Produced by:\n\n```text\n{command}\n```\n");
    let b = &sweep.base;
    let _ = writeln!(
        md,
        "Model `{}`, dataset `{}`{}, {} epochs{}, optimizer `{}` lr {} (`{}` schedule), \
         momentum {}, weight decay {}, batch {}, device `{}`; seeds {:?}. Accuracy is the final \
         model's on the {}, mean ± sample std over seeds (n per cell in brackets when not all \
         seeds finished).\n",
        spelling(&b.model),
        spelling(&b.dataset.name),
        b.dataset.train_limit.map_or_else(String::new, |n| format!(
            " (training on its first {n} images)"
        )),
        b.epochs,
        if lottery {
            " (per IMP level for the lottery)"
        } else {
            ""
        },
        spelling(&b.optimizer.kind),
        b.optimizer.lr,
        spelling(&b.optimizer.lr_schedule),
        b.optimizer.momentum,
        b.optimizer.weight_decay,
        b.optimizer.batch_size,
        b.device,
        sweep.grid.seeds,
        b.dataset.test_limit.map_or_else(
            || "full test set".to_string(),
            |n| format!("first {n} test images")
        ),
    );
    if lottery {
        let levels = b.lottery.levels.map_or_else(
            || "as many 20% levels as each target needs".to_string(),
            |l| format!("{l} levels"),
        );
        let _ = writeln!(
            md,
            "The lottery ticket is IMP with global magnitude pruning, {levels}, rewinding to {}: \
             it trains once per level plus the dense level 0, so its budget is that many times \
             the other methods'. Its cell is the last level's ticket.\n",
            if b.lottery.rewind_epoch == 0 {
                "init".to_string()
            } else {
                format!("the end of epoch {}", b.lottery.rewind_epoch)
            }
        );
    }
    md
}

/// Markdown: methods x sparsities, mean ± std.
fn summary_table(agg: &Aggregate) -> String {
    let mut md = String::from("| method |");
    for s in &agg.sparsities {
        let _ = write!(md, " {:.1}% sparse |", 100.0 * s);
    }
    let _ = write!(md, "\n|---|");
    for _ in &agg.sparsities {
        let _ = write!(md, "---|");
    }
    md.push('\n');
    for &m in &agg.methods {
        let _ = write!(md, "| {m} |");
        for &s in &agg.sparsities {
            match agg.accuracy(m, s) {
                Some((a, sd, k)) => {
                    let _ = write!(md, " {a:.2} ± {sd:.2}");
                    if k != agg.seeds {
                        let _ = write!(md, " (n={k})");
                    }
                    md.push_str(" |");
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md
}

/// Markdown: training and inference FLOPs relative to dense (the RigL paper's count), per
/// method and sparsity, mean over seeds; empty when no run recorded them.
fn flops_table(agg: &Aggregate) -> String {
    let mut rows = String::new();
    for &m in &agg.methods {
        let sparsities: Vec<f64> = if m == MethodName::Dense {
            vec![0.0]
        } else {
            agg.sparsities.clone()
        };
        for s in sparsities {
            let rs = agg.runs(m, s);
            let mean = |f: fn(&RunResult) -> Option<f64>| -> Option<f64> {
                let xs: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
                (!xs.is_empty() && xs.len() == rs.len()).then(|| mean_std(&xs).0)
            };
            if let (Some(t), Some(i)) = (mean(|r| r.train_flops), mean(|r| r.inference_flops)) {
                let _ = writeln!(rows, "| {m} | {:.1}% | {t:.3} | {i:.3} |", 100.0 * s);
            }
        }
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "| method | sparsity | training FLOPs / dense | inference FLOPs / dense |\n|---|---|---|---|\n{rows}"
    )
}

/// Markdown: the lottery's level table (the deepest sparsity's runs, mean over seeds).
fn lottery_levels(agg: &Aggregate) -> String {
    let mut md = String::new();
    let Some(&smax) = agg
        .sparsities
        .iter()
        .max_by(|a, b| a.total_cmp(b))
        .filter(|_| agg.methods.contains(&MethodName::Lottery))
    else {
        return md;
    };
    let rs = agg.runs(MethodName::Lottery, smax);
    let tables: Vec<&Vec<LevelRow>> = rs.iter().filter_map(|r| r.levels.as_ref()).collect();
    let depth = tables.iter().map(|t| t.len()).min().unwrap_or(0);
    if depth == 0 {
        return md;
    }
    let _ = writeln!(
        md,
        "\n## Lottery ticket levels ({:.0}% target, {} seeds)\n",
        100.0 * smax,
        tables.len()
    );
    let baselines = tables
        .iter()
        .all(|t| t.iter().skip(1).all(|r| r.random_reinit.is_some()));
    if baselines {
        let _ = writeln!(
            md,
            "| level | weights remaining | ticket | random reinit | random pruning |\n|---|---|---|---|---|"
        );
    } else {
        let _ = writeln!(md, "| level | weights remaining | ticket |\n|---|---|---|");
    }
    for l in 0..depth {
        let col = |f: &dyn Fn(&LevelRow) -> Option<f64>| {
            let xs: Vec<f64> = tables.iter().filter_map(|t| f(&t[l])).collect();
            if xs.is_empty() {
                "–".to_string()
            } else {
                let (a, s) = mean_std(&xs);
                format!("{a:.2} ± {s:.2}")
            }
        };
        let dens = mean_std(&tables.iter().map(|t| t[l].density).collect::<Vec<_>>()).0;
        let _ = write!(
            md,
            "| {l} | {:.2}% | {} |",
            100.0 * dens,
            col(&|r| Some(r.ticket))
        );
        if baselines {
            let _ = write!(
                md,
                " {} | {} |",
                col(&|r| r.random_reinit),
                col(&|r| r.random_pruning)
            );
        }
        md.push('\n');
    }
    md
}

/// Markdown: where the report lives (its links are relative to it).
fn markdown_dir(sweep: &SweepConfig, out_dir: &Path) -> PathBuf {
    let d = sweep
        .output
        .markdown
        .as_ref()
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
        .unwrap_or_else(|| out_dir.to_path_buf());
    if d.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        d
    }
}

/// Markdown: `results.md` in the output dir (its links relative to itself) and the copy at
/// `output.markdown`.
fn write_reports(
    sweep: &SweepConfig,
    out_dir: &Path,
    md_dir: &Path,
    md: &str,
    images: &[Image],
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let p = out_dir.join("results.md");
    let local = if md_dir == out_dir {
        md.to_string()
    } else {
        let mut m = md.to_string();
        for (_, png) in images {
            m = m.replace(&relative(md_dir, png), &relative(out_dir, png));
        }
        m
    };
    write_atomic(&p, local.as_bytes())?;
    files.push(p);
    if let Some(mdp) = &sweep.output.markdown {
        let p = PathBuf::from(mdp);
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(d)?;
        }
        let old = match std::fs::metadata(&p) {
            Ok(_) => Some(
                String::from_utf8(read_at_most(&p, MAX_TEXT_FILE)?).map_err(|_| Error::RunDir {
                    path: p.clone(),
                    message: "is not UTF-8 text".into(),
                })?,
            ),
            Err(_) => None,
        };
        let text = merge_sections(old.as_deref(), md, sweep.output.section.as_deref()).map_err(
            |message| Error::RunDir {
                path: p.clone(),
                message,
            },
        )?;
        write_atomic(&p, text.as_bytes())?;
        files.push(p);
    }
    Ok(files)
}

/// The sections of `text`: (name, whole block with its markers), in order.
fn sections(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("<!-- section ") {
        let after = &rest[i + "<!-- section ".len()..];
        let Some(name) = after
            .split_once(" begin -->")
            .map(|(n, _)| n)
            .filter(|n| !n.contains(char::is_whitespace))
        else {
            // An end marker (or stray text) outside a block: step over it.
            rest = &rest[i + 1..];
            continue;
        };
        let (_, end) = section_markers(name);
        let Some(j) = rest[i..].find(&end) else {
            return Err(format!("section `{name}` has no `{end}` line"));
        };
        let stop = i + j + end.len();
        out.push((name.to_string(), rest[i..stop].to_string()));
        rest = &rest[stop..];
    }
    Ok(out)
}

/// A report as a section: its headings one level down (outside code fences), in markers.
fn as_section(name: &str, md: &str) -> String {
    let (b, e) = section_markers(name);
    let mut fenced = false;
    let body: Vec<String> = md
        .trim_end()
        .lines()
        .map(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
            }
            if !fenced && l.starts_with('#') {
                format!("#{l}")
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("{b}\n{}\n{e}", body.join("\n"))
}

/// The shared report after a sweep: a section replaces its block in `old` (or is appended);
/// a whole report replaces `old` and keeps `old`'s sections after it.
fn merge_sections(
    old: Option<&str>,
    md: &str,
    section: Option<&str>,
) -> std::result::Result<String, String> {
    let old_sections = old.map(sections).transpose()?.unwrap_or_default();
    match section {
        None => {
            let mut text = md.trim_end().to_string();
            for (_, block) in &old_sections {
                text.push_str("\n\n");
                text.push_str(block);
            }
            text.push('\n');
            Ok(text)
        }
        Some(name) => {
            let block = as_section(name, md);
            let old = old.unwrap_or("");
            let text = match old_sections.iter().find(|(n, _)| n == name) {
                Some((_, existing)) => old.replacen(existing.as_str(), &block, 1),
                None if old.trim().is_empty() => format!("{block}\n"),
                None => format!("{}\n\n{block}\n", old.trim_end()),
            };
            Ok(text)
        }
    }
}

/// README splice: the summary table between [`README_MARKERS`] in `readme`, the rest kept.
fn splice_readme(
    readme: &Path,
    sweep: &SweepConfig,
    command: &str,
    table: &str,
    out_dir: &Path,
) -> Result<PathBuf> {
    let p = readme.to_path_buf();
    let text = String::from_utf8(read_at_most(&p, MAX_TEXT_FILE)?).map_err(|_| Error::RunDir {
        path: p.clone(),
        message: "is not UTF-8 text".into(),
    })?;
    let (b, e) = README_MARKERS;
    let (Some(i), Some(j)) = (text.find(b), text.find(e)) else {
        return Err(Error::RunDir {
            path: p,
            message: format!("needs the lines `{b}` and `{e}` around the summary"),
        });
    };
    if j < i {
        return Err(Error::RunDir {
            path: p,
            message: format!("`{e}` comes before `{b}`"),
        });
    }
    let parent = p.parent().unwrap_or(Path::new("."));
    let link = sweep.output.markdown.as_ref().map_or_else(
        || relative(parent, &out_dir.join("results.md")),
        |m| relative(parent, Path::new(m)),
    );
    let summary = format!(
        "{b}\n<!-- Generated by `burn-sparse compare`; do not edit. -->\n\nTest accuracy (%), mean \
         ± std over seeds {:?}, {} epochs; produced by `{command}` (details and plots in \
         [{link}]({link})):\n\n{table}\n",
        sweep.grid.seeds, sweep.base.epochs
    );
    let new_text = format!("{}{summary}{}", &text[..i], &text[j..]);
    write_atomic(&p, new_text.as_bytes())?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_is_the_sample_std() {
        assert_eq!(mean_std(&[2.0]), (2.0, 0.0));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn dense_runs_once_per_seed() {
        let s = SweepConfig {
            base: ExperimentConfig::default(),
            grid: Grid {
                methods: vec![MethodName::Dense, MethodName::Rigl],
                sparsities: vec![0.9, 0.95],
                seeds: vec![0, 1],
            },
            output: OutputConfig::default(),
        };
        let p = s.points();
        assert_eq!(p.len(), 2 + 4);
        assert!(p[..2].iter().all(|c| c.method == MethodName::Dense));
    }

    #[test]
    fn sections_are_replaced_appended_and_kept() {
        let main = "# Results\n\n| a |\n";
        // Appended to the main report, headings one level down, code fences untouched.
        let vit = "# Vit\n\n```text\n# not a heading\n```\n\n## Plots\n";
        let t = merge_sections(Some(main), vit, Some("vit")).unwrap();
        assert_eq!(
            t,
            "# Results\n\n| a |\n\n<!-- section vit begin -->\n## Vit\n\n```text\n# not a \
             heading\n```\n\n### Plots\n<!-- section vit end -->\n"
        );
        // A second section, then the first one again: replaced in place.
        let t = merge_sections(Some(&t), "# Resnet\n", Some("resnet")).unwrap();
        let t2 = merge_sections(Some(&t), "# Vit v2\n", Some("vit")).unwrap();
        assert!(t2.contains("## Vit v2") && !t2.contains("## Vit\n"));
        assert!(t2.find("section vit begin") < t2.find("section resnet begin"));
        assert_eq!(sections(&t2).unwrap().len(), 2);
        // The main sweep rewrites its part and keeps both sections.
        let t3 = merge_sections(Some(&t2), "# Results v2\n", None).unwrap();
        assert!(t3.starts_with("# Results v2\n\n<!-- section vit begin -->"));
        assert_eq!(
            sections(&t3).unwrap(),
            sections(&t2).unwrap(),
            "sections kept verbatim"
        );
        // A file without sections, and no file at all.
        assert_eq!(merge_sections(None, main, None).unwrap(), main);
        assert_eq!(
            merge_sections(None, "# X\n", Some("x")).unwrap(),
            "<!-- section x begin -->\n## X\n<!-- section x end -->\n"
        );
        // An unterminated section is an error, not a silent loss.
        let broken = "# R\n<!-- section vit begin -->\n## Vit\n";
        assert!(merge_sections(Some(broken), main, None).is_err());
    }

    #[test]
    fn relative_paths_climb_and_descend() {
        assert_eq!(
            relative(Path::new("/a/docs"), Path::new("/a/docs/results/x.png")),
            "results/x.png"
        );
        assert_eq!(
            relative(Path::new("/a/docs"), Path::new("/a/runs/x.png")),
            "../runs/x.png"
        );
        // A file in the working directory has an empty parent.
        let readme_dir = Path::new("README.md").parent().unwrap();
        assert_eq!(
            relative(readme_dir, Path::new("docs/RESULTS.md")),
            "docs/RESULTS.md"
        );
    }
}
