//! The sweep's SVG chart: prefill tok/s (left axis) and decode tok/s (right axis) against
//! context length.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

const PREFILL: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const DECODE: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// Draws `(ctx, prefill tok/s, decode tok/s)` points to an SVG file at `path`, under a title
/// and a smaller subtitle line.
pub fn draw(path: &Path, title: &str, subtitle: &str, points: &[(usize, f64, f64)]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let x_min = points.iter().map(|p| p.0).min().unwrap_or(0) as f64;
    let x_max = points.iter().map(|p| p.0).max().unwrap_or(1) as f64;
    // A single frontier still gets a visible x range.
    let x_range = if x_max > x_min {
        x_min..x_max
    } else {
        x_min - 1.0..x_max + 1.0
    };
    let top =
        |f: fn(&(usize, f64, f64)) -> f64| points.iter().map(f).fold(0.0, f64::max).max(1e-9) * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let area = root
        .titled(title, ("sans-serif", 18))
        .and_then(|a| a.titled(subtitle, ("sans-serif", 12)))
        .map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&area)
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(x_range.clone(), 0.0..top(|p| p.1))
        .map_err(|e| fail(&e))?
        .set_secondary_coord(x_range, 0.0..top(|p| p.2));
    let whole = |v: &f64| format!("{v:.0}");
    chart
        .configure_mesh()
        .x_desc("context (tokens)")
        .y_desc("prefill tok/s")
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("decode tok/s")
        .y_label_formatter(&whole)
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.0 as f64, p.1)),
            PREFILL.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("prefill (left)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PREFILL.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(
            points.iter().map(|p| (p.0 as f64, p.2)),
            DECODE.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("decode (right)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], DECODE.stroke_width(2)));
    chart
        .draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.0 as f64, p.1), 3, PREFILL.filled())),
        )
        .map_err(|e| fail(&e))?;
    chart
        .draw_secondary_series(
            points
                .iter()
                .map(|p| Circle::new((p.0 as f64, p.2), 3, DECODE.filled())),
        )
        .map_err(|e| fail(&e))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
