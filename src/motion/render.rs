//! Stick figures over a strip of frames (SVG): ground truth against reconstructions,
//! the picture a person looks at to judge a motion reconstruction.

use super::body::SPRINGS;
use crate::error::{Error, Result};
use glam::DVec3;
use plotters::prelude::*;
use std::path::Path;

/// One figure sequence in the strip: a label, a colour and the body points per frame.
pub struct Layer<'a> {
    pub label: &'a str,
    pub color: RGBColor,
    pub frames: &'a [Vec<DVec3>],
}

/// Draws `layers` side by side per frame, seen horizontally from `azimuth` (rad about
/// the vertical; 0 looks along −z, a walker on +x seen from the side). Each panel is
/// centred on the first layer's root (midpoint of the hips) at that frame.
pub fn stick_strip(
    path: &Path,
    title: &str,
    times: &[f64],
    layers: &[Layer],
    azimuth: f64,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Io(format!("{}: {e}", path.display()));
    let n = times.len();
    if n == 0 || layers.iter().any(|l| l.frames.len() != n) {
        return Err(Error::Problem(
            "a stick strip needs the same number of frames in every layer".into(),
        ));
    }
    let right = DVec3::new(azimuth.cos(), 0.0, -azimuth.sin());
    let root = SVGBackend::new(path, (170 * n as u32 + 20, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 18))
        .map_err(|e| err(&e))?;
    let (body, legend) = root.split_vertically(330);
    let panels = body.split_evenly((1, n));
    for (f, panel) in panels.iter().enumerate() {
        let hips = &layers[0].frames[f];
        let centre = 0.5 * (hips[9] + hips[14]).dot(right);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("t = {:.2} s", times[f]), ("sans-serif", 13))
            .margin(4)
            .build_cartesian_2d(-0.9..0.9, -0.05..2.1)
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(-0.9, 0.0), (0.9, 0.0)],
                BLACK.mix(0.4).stroke_width(1),
            )))
            .map_err(|e| err(&e))?;
        for layer in layers {
            let pts = &layer.frames[f];
            let xy = |p: DVec3| (p.dot(right) - centre, p.y);
            chart
                .draw_series(SPRINGS.iter().map(|&(a, b)| {
                    PathElement::new(vec![xy(pts[a]), xy(pts[b])], layer.color.stroke_width(2))
                }))
                .map_err(|e| err(&e))?;
        }
    }
    let mut x = 20;
    for layer in layers {
        legend
            .draw(&PathElement::new(
                vec![(x, 20), (x + 30, 20)],
                layer.color.stroke_width(3),
            ))
            .map_err(|e| err(&e))?;
        legend
            .draw(&Text::new(
                layer.label.to_string(),
                (x + 36, 12),
                ("sans-serif", 14),
            ))
            .map_err(|e| err(&e))?;
        x += 60 + 8 * layer.label.len() as i32;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
