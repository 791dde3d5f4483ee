//! Plots as SVG and PNG with `plotters`. Text uses DejaVu Sans, compiled in, so a PNG renders
//! the same on a machine without fonts.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

/// One line of a line chart: points and an optional error bar (± value) per point.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Half-widths of error bars, one per point (empty: none).
    pub errors: Vec<f64>,
    /// A fixed palette index, so one method has one colour across plots (None: by position).
    pub color: Option<usize>,
}

impl Series {
    /// A series without error bars.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            errors: Vec::new(),
            color: None,
        }
    }

    /// With a fixed palette index.
    pub fn with_color(mut self, color: usize) -> Self {
        self.color = Some(color);
        self
    }
}

const SIZE: (u32, u32) = (900, 560);

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A font that fails to parse only leaves text undrawn; the charts still render.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// A drawing error; [`render`] names the file.
fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot {
        path: PathBuf::new(),
        message: e.to_string(),
    }
}

/// A chart that can be drawn on any plotters backend.
trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Draw `chart` into `stem.svg` and `stem.png` (each under a temporary name, then renamed, so
/// a reader never sees half a plot); returns both paths.
fn render(stem: &Path, chart: &impl Chart) -> Result<Vec<PathBuf>> {
    fonts();
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    let name = stem
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "plot".into());
    let svg = stem.with_file_name(format!("{name}.svg"));
    let png = stem.with_file_name(format!("{name}.png"));
    // The PID keeps two processes drawing the same plot (compare shards) off each other's files.
    let pid = std::process::id();
    let tmp_svg = stem.with_file_name(format!(".{name}.tmp-{pid}.svg"));
    let tmp_png = stem.with_file_name(format!(".{name}.tmp-{pid}.png"));
    let named = |e: Error, path: &Path| {
        let _ = std::fs::remove_file(&tmp_svg);
        let _ = std::fs::remove_file(&tmp_png);
        match e {
            Error::Plot { message, .. } => Error::Plot {
                path: path.to_path_buf(),
                message,
            },
            e => e,
        }
    };
    {
        let root = SVGBackend::new(&tmp_svg, SIZE).into_drawing_area();
        chart
            .draw(&root)
            .and_then(|()| root.present().map_err(plot_err))
            .map_err(|e| named(e, &svg))?;
    }
    {
        let root = BitMapBackend::new(&tmp_png, SIZE).into_drawing_area();
        chart
            .draw(&root)
            .and_then(|()| root.present().map_err(plot_err))
            .map_err(|e| named(e, &png))?;
    }
    for (tmp, out) in [(&tmp_svg, &svg), (&tmp_png, &png)] {
        burn_sparse::mask::checkpoint::commit_point();
        std::fs::rename(tmp, out).map_err(|e| Error::Io {
            path: out.clone(),
            source: e,
        })?;
    }
    Ok(vec![svg, png])
}

fn range(values: impl Iterator<Item = f64>, pad_frac: f64, min_pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * pad_frac).max(min_pad);
    (lo - pad, hi + pad)
}

struct Lines<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: &'a [Series],
    log_x: bool,
}

impl Chart for Lines<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(plot_err)?;
        let fx = |x: f64| if self.log_x { x.max(1e-12).log10() } else { x };
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = range(pts().map(|p| fx(p.0)), 0.04, 1e-6);
        let (y0, y1) = range(
            self.series.iter().flat_map(|s| {
                s.points.iter().enumerate().flat_map(move |(i, p)| {
                    let e = s.errors.get(i).copied().unwrap_or(0.0);
                    [p.1 - e, p.1 + e]
                })
            }),
            0.08,
            0.05,
        );
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 22).into_font())
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        let log_x = self.log_x;
        let fmt_x = move |v: &f64| {
            let x = if log_x { 10f64.powf(*v) } else { *v };
            if x.abs() >= 100.0 || x == x.round() {
                format!("{x:.0}")
            } else if x.abs() >= 10.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.2}")
            }
        };
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        for (i, s) in self.series.iter().enumerate() {
            let c = color(s.color.unwrap_or(i));
            let line: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (fx(x), y)).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
                .map_err(plot_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(plot_err)?;
            if !s.errors.is_empty() {
                chart
                    .draw_series(line.iter().zip(&s.errors).map(|(&(x, y), &e)| {
                        PathElement::new(vec![(x, y - e), (x, y + e)], c.stroke_width(1))
                    }))
                    .map_err(plot_err)?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

/// A line chart with one line (and optional error bars) per series, written as `stem.svg` and
/// `stem.png`. `log_x` puts the x axis on a log scale.
///
/// # Errors
/// [`Error::Plot`] or [`Error::Io`].
pub fn line_chart(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> Result<Vec<PathBuf>> {
    render(
        stem,
        &Lines {
            title,
            x_label,
            y_label,
            series,
            log_x,
        },
    )
}

struct Bars<'a> {
    title: &'a str,
    y_label: &'a str,
    categories: &'a [String],
    series: &'a [(String, Vec<f64>, Option<usize>)],
}

impl Chart for Bars<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(plot_err)?;
        let n = self.categories.len().max(1);
        let y1 = self
            .series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-6)
            * 1.15;
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 22).into_font())
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..y1)
            .map_err(plot_err)?;
        let cats = self.categories;
        let fmt_x = move |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                cats.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&fmt_x)
            .y_desc(self.y_label)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        let k = self.series.len().max(1) as f64;
        let w = 0.8 / k;
        for (j, (name, values, col)) in self.series.iter().enumerate() {
            let c = color(col.unwrap_or(j));
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let x = i as f64 - 0.4 + w * j as f64;
                    Rectangle::new([(x, 0.0), (x + w * 0.95, v)], c.filled())
                }))
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

/// Grouped bars: one group per category (layer), one bar per series (method): name, one
/// value per category, and an optional fixed palette index.
///
/// # Errors
/// [`Error::Plot`] or [`Error::Io`].
pub fn bar_chart(
    stem: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>, Option<usize>)],
) -> Result<Vec<PathBuf>> {
    render(
        stem,
        &Bars {
            title,
            y_label,
            categories,
            series,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_that_cannot_be_written_names_its_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("acc");
        // The temporary PNG's name is taken by a folder: the PNG cannot be written.
        let blocker = dir
            .path()
            .join(format!(".acc.tmp-{}.png", std::process::id()));
        std::fs::create_dir(&blocker).unwrap();
        let series = [Series {
            name: "rigl".into(),
            points: vec![(0.5, 90.0), (0.9, 80.0)],
            errors: Vec::new(),
            color: None,
        }];
        let e = line_chart(&stem, "t", "x", "y", &series, false).unwrap_err();
        assert!(matches!(e, Error::Plot { .. }), "{e}");
        assert!(e.to_string().contains("acc.png"), "{e}");
        // No final file, no temporary SVG left behind.
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            [blocker.file_name().unwrap().to_string_lossy()],
            "{left:?}"
        );
    }
}
