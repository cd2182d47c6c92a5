//! The scenario's PNG plot: the test loss (MSE, log-loss) per round for each hospital against its
//! local-only level and the pooled reference. Text is rasterized from the
//! bundled DejaVu Sans with `ab_glyph`, so the plot renders the same on a
//! machine without any system font. The numbers come from
//! [`crate::outcome`]; nothing is computed here but the drawing.

use std::path::Path;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::outcome::{is_readable, Outcome};

static FONT_TTF: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Where a text is anchored horizontally.
#[derive(Clone, Copy)]
enum Anchor {
    Left,
    Center,
    Right,
}

/// Draws `text` with its top at `y`, rasterized from the bundled font.
fn draw_text(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    font: &FontRef<'_>,
    text: &str,
    (x, y): (i32, i32),
    size: f32,
    color: RGBColor,
    anchor: Anchor,
) -> Result<()> {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut glyphs = Vec::new();
    let mut caret = 0.0f32;
    let mut prev = None;
    for ch in text.chars() {
        let id = scaled.glyph_id(ch);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        glyphs.push(
            id.with_scale_and_position(
                PxScale::from(size),
                ab_glyph::point(caret, scaled.ascent()),
            ),
        );
        caret += scaled.h_advance(id);
        prev = Some(id);
    }
    let x0 = match anchor {
        Anchor::Left => x as f32,
        Anchor::Center => x as f32 - caret / 2.0,
        Anchor::Right => x as f32 - caret,
    };
    for g in glyphs {
        if let Some(outline) = font.outline_glyph(g) {
            let b = outline.px_bounds();
            let mut err = None;
            outline.draw(|gx, gy, cov| {
                if cov > 0.02 && err.is_none() {
                    let px = (x0 + b.min.x) as i32 + gx as i32;
                    let py = y + b.min.y as i32 + gy as i32;
                    if let Err(e) = area.draw_pixel((px, py), &color.mix(f64::from(cov.min(1.0)))) {
                        err = Some(e.to_string());
                    }
                }
            });
            if let Some(e) = err {
                return Err(anyhow!("drawing text: {e}"));
            }
        }
    }
    Ok(())
}

fn nice_step(range: f64, target_ticks: f64) -> f64 {
    let raw = range / target_ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// What the plot draws: per hospital its name, its test loss at the start
/// and after every round, and its local-only level; the pooled cleartext
/// level; the loss's name for the axis.
#[derive(Debug, Clone)]
pub struct Curves<'a> {
    /// (name, loss per round from round 0, local-only loss) per hospital.
    pub hospitals: Vec<(&'a str, &'a [f64], f64)>,
    /// The pooled cleartext model's loss.
    pub pooled: f64,
    /// The loss's name ("test MSE", "test log-loss").
    pub loss: &'a str,
}

impl<'a> Curves<'a> {
    /// The test MSE curves of a regression outcome.
    pub fn mse(outcome: &'a Outcome) -> Curves<'a> {
        Curves {
            hospitals: outcome
                .hospitals
                .iter()
                .map(|h| (h.name.as_str(), h.mse_per_round.as_slice(), h.local_mse))
                .collect(),
            pooled: outcome.pooled_mse,
            loss: "test MSE",
        }
    }
}

/// Writes the PNG: the test loss per round for each hospital (solid), its
/// local-only level (dashed, same colour) and the pooled cleartext
/// gradient-descent level (dotted grey).
pub fn write_plot(path: &Path, curves: &Curves<'_>, title: &str) -> Result<()> {
    let font = FontRef::try_from_slice(FONT_TTF).map_err(|e| anyhow!("bundled font: {e}"))?;
    let (w, h) = (1000u32, 640u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    let de = |e: DrawingAreaErrorKind<_>| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(de)?;

    let rounds = curves
        .hospitals
        .iter()
        .map(|(_, c, _)| c.len().saturating_sub(1))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut values: Vec<f64> = curves
        .hospitals
        .iter()
        .flat_map(|(_, c, local)| c.iter().copied().chain([*local]))
        .filter(|v| is_readable(*v))
        .collect();
    values.extend(Some(curves.pooled).filter(|v| is_readable(*v)));
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    } else if lo.is_finite() {
        (lo - 1.0, lo + 1.0)
    } else {
        (0.0, 1.0)
    };

    let (left, right, top, bottom) = (90i32, 210i32, 60i32, 60i32);
    let plot_area = root.margin(top as u32, bottom as u32, left as u32, right as u32);
    let mut chart = ChartBuilder::on(&plot_area)
        .build_cartesian_2d(0f64..rounds as f64, lo..hi)
        .map_err(de)?;
    let to_px = |x: f64, y: f64| {
        let (px, py) = chart.backend_coord(&(x, y));
        (px, py)
    };

    // Grid and tick labels.
    let grid = RGBColor(225, 225, 225);
    let ystep = nice_step(hi - lo, 8.0);
    // Enough decimals that neighbouring ticks differ (a log-loss spans 0..1).
    let decimals = (-ystep.log10().floor()).clamp(0.0, 6.0) as usize;
    let mut yv = (lo / ystep).ceil() * ystep;
    while yv <= hi {
        let (_, py) = to_px(0.0, yv);
        root.draw(&PathElement::new(
            vec![(left, py), (w as i32 - right, py)],
            grid,
        ))
        .map_err(de)?;
        draw_text(
            &root,
            &font,
            &format!("{yv:.decimals$}"),
            (left - 8, py - 8),
            14.0,
            BLACK,
            Anchor::Right,
        )?;
        yv += ystep;
    }
    let xstep = nice_step(rounds as f64, 10.0).max(1.0);
    let mut xv = 0.0;
    while xv <= rounds as f64 + 1e-9 {
        let (px, _) = to_px(xv, lo);
        root.draw(&PathElement::new(
            vec![(px, top), (px, h as i32 - bottom)],
            grid,
        ))
        .map_err(de)?;
        draw_text(
            &root,
            &font,
            &format!("{xv:.0}"),
            (px, h as i32 - bottom + 6),
            14.0,
            BLACK,
            Anchor::Center,
        )?;
        xv += xstep;
    }
    root.draw(&Rectangle::new(
        [(left, top), (w as i32 - right, h as i32 - bottom)],
        BLACK.stroke_width(1),
    ))
    .map_err(de)?;

    for (i, (_, curve, local)) in curves.hospitals.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                curve.iter().enumerate().map(|(r, &m)| (r as f64, m)),
                color.stroke_width(2),
            ))
            .map_err(de)?;
        if is_readable(*local) {
            dashed(&mut chart, *local, rounds, color, 8, 6).map_err(de)?;
        }
    }
    if is_readable(curves.pooled) {
        dashed(
            &mut chart,
            curves.pooled,
            rounds,
            RGBColor(90, 90, 90),
            2,
            4,
        )
        .map_err(de)?;
    }

    // Titles and legend.
    draw_text(&root, &font, title, (left, 14), 20.0, BLACK, Anchor::Left)?;
    draw_text(
        &root,
        &font,
        curves.loss,
        (left, top - 24),
        14.0,
        BLACK,
        Anchor::Left,
    )?;
    draw_text(
        &root,
        &font,
        "round",
        ((left + w as i32 - right) / 2, h as i32 - 28),
        15.0,
        BLACK,
        Anchor::Center,
    )?;
    let lx = w as i32 - right + 16;
    let mut ly = top;
    for (i, (name, _, _)) in curves.hospitals.iter().enumerate().take(24) {
        let color = PALETTE[i % PALETTE.len()];
        root.draw(&PathElement::new(
            vec![(lx, ly + 9), (lx + 26, ly + 9)],
            color.stroke_width(2),
        ))
        .map_err(de)?;
        draw_text(&root, &font, name, (lx + 32, ly), 13.0, BLACK, Anchor::Left)?;
        ly += 20;
    }
    for (label, dash, gap) in [("local-only level", 8, 6), ("pooled data, cleartext", 2, 4)] {
        let color = RGBColor(90, 90, 90);
        let mut x = lx;
        while x < lx + 26 {
            let end = (x + dash).min(lx + 26);
            root.draw(&PathElement::new(
                vec![(x, ly + 9), (end, ly + 9)],
                color.stroke_width(2),
            ))
            .map_err(de)?;
            x += dash + gap;
        }
        draw_text(
            &root,
            &font,
            label,
            (lx + 32, ly),
            13.0,
            BLACK,
            Anchor::Left,
        )?;
        ly += 20;
    }
    root.present().map_err(de)?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A horizontal dashed line at `y` across the rounds, drawn as short segments.
fn dashed(
    chart: &mut Chart<'_, '_>,
    y: f64,
    rounds: usize,
    color: RGBColor,
    dash_px: i32,
    gap_px: i32,
) -> std::result::Result<
    (),
    DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>,
> {
    let (x0, _) = chart.backend_coord(&(0.0, y));
    let (x1, _) = chart.backend_coord(&(rounds as f64, y));
    let px_per_unit = f64::from((x1 - x0).max(1)) / rounds as f64;
    let mut px = 0;
    let total = x1 - x0;
    while px < total {
        let a = f64::from(px) / px_per_unit;
        let b = f64::from((px + dash_px).min(total)) / px_per_unit;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(a, y), (b, y)],
            color.stroke_width(2),
        )))?;
        px += dash_px + gap_px;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::tests::example;

    #[test]
    fn diverged_models_still_plot() {
        let mut o = example();
        o.hospitals[0].local_mse = 2.5e180;
        o.hospitals[1].local_mse = f64::INFINITY;
        let dir = tempfile::tempdir().unwrap();
        write_plot(&dir.path().join("p.png"), &Curves::mse(&o), "diverged").unwrap();
    }

    #[test]
    fn plot_is_a_png_with_text_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        write_plot(&path, &Curves::mse(&example()), "Test MSE per round").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        if let Ok(keep) = std::env::var("SCENARIOS_KEEP_PLOT") {
            std::fs::copy(&path, keep).unwrap();
        }
    }
}
