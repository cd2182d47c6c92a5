//! The PNG plot of test accuracy per batch against the float32 model.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// Draws `series[i] = (accuracy, float32 accuracy)` after batch `i + 1`.
/// Falls back to a chart without text when no font can be loaded.
pub fn accuracy_plot(path: &Path, label: &str, series: &[(f64, f64)]) -> Result<()> {
    if series.is_empty() {
        return Err(Error::Plot("no batches to plot".into()));
    }
    draw(path, label, series, true).or_else(|_| draw(path, label, series, false))
}

fn draw(path: &Path, label: &str, series: &[(f64, f64)], text: bool) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Plot(e.to_string());
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n = series.len() as f64;
    let lo = series
        .iter()
        .flat_map(|&(a, b)| [a, b])
        .fold(1.0f64, f64::min)
        .min(0.5);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder
            .caption(
                format!("Test accuracy per batch: {label} vs float32"),
                ("sans-serif", 22),
            )
            .x_label_area_size(40)
            .y_label_area_size(55);
    }
    let mut chart = builder
        .build_cartesian_2d(1.0..n.max(2.0), lo..1.0)
        .map_err(|e| err(&e))?;
    if text {
        chart
            .configure_mesh()
            .x_desc("batch")
            .y_desc("test accuracy")
            .draw()
            .map_err(|e| err(&e))?;
    } else {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(|e| err(&e))?;
    }
    let enc: Vec<(f64, f64)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64 + 1.0, s.0))
        .collect();
    let flt: Vec<(f64, f64)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64 + 1.0, s.1))
        .collect();
    let a = chart
        .draw_series(LineSeries::new(enc, BLUE.stroke_width(2)))
        .map_err(|e| err(&e))?;
    if text {
        a.label(label.to_string())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    let b = chart
        .draw_series(LineSeries::new(flt, RED.stroke_width(2)))
        .map_err(|e| err(&e))?;
    if text {
        b.label("float32")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
