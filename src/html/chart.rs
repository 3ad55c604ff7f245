//! Charts of the HTML report, drawn as SVG with `plotters` (its SVG backend
//! only: no font or system dependency). Text is SVG `<text>` (selectable,
//! escaped by the backend), and every series, band and reference line is
//! named in text on the chart, so colour is never the only signal.
//!
//! One general chart: a time axis, lines or bars, an optional band (the
//! baseline's seasonal range), labelled horizontal rules (median, p99, usual
//! rate) and labelled points. The same input always gives the same bytes.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Line,
    /// Bars `width` ms wide, starting at each point's time.
    Bars {
        width: i64,
    },
}

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub kind: Kind,
    pub points: Vec<(i64, f64)>,
}

/// How the time axis is labelled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeAxis {
    Minutes,
    Hours,
    Days,
}

/// A named range per time, drawn behind the series.
#[derive(Debug, Clone)]
pub struct Band {
    pub label: String,
    /// (time, low, high).
    pub slots: Vec<(i64, f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub y_label: String,
    /// The time range shown, ms since the epoch.
    pub x: (i64, i64),
    pub axis: TimeAxis,
    pub series: Vec<Series>,
    pub band: Option<Band>,
    /// Named horizontal reference lines.
    pub rules: Vec<(String, f64)>,
    /// Named points (e.g. a session's steps with their probability).
    pub marks: Vec<(i64, f64, String)>,
    /// A log scale (values below 1 drawn at 1): a spike and its baseline on one chart.
    pub log_y: bool,
}

/// Plotting failed (the SVG backend writes to a string, so this is a bug).
#[derive(Debug, thiserror::Error)]
#[error("drawing chart {title:?}: {message}")]
pub struct ChartError {
    pub title: String,
    pub message: String,
}

const PALETTE: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
const GREY: RGBColor = RGBColor(110, 110, 110);
const BAND: RGBColor = RGBColor(190, 190, 190);

/// The chart as one `<svg>` element of `size` pixels.
pub fn svg(c: &Chart, size: (u32, u32)) -> Result<String, ChartError> {
    let mut out = String::new();
    draw(c, size, &mut out).map_err(|message| ChartError { title: c.title.clone(), message })?;
    Ok(out)
}

fn draw(c: &Chart, size: (u32, u32), out: &mut String) -> Result<(), String> {
    let e = |e: plotters::drawing::DrawingAreaErrorKind<std::io::Error>| e.to_string();
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (x0, x1) = if c.x.1 > c.x.0 { c.x } else { (c.x.0, c.x.0 + 60_000) };
    let log = c.log_y;
    let values = || {
        c.series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(c.band.iter().flat_map(|b| b.slots.iter().flat_map(|p| [p.1, p.2])))
            .chain(c.rules.iter().map(|r| r.1))
            .chain(c.marks.iter().map(|m| m.1))
            .filter(|v| v.is_finite())
    };
    // On a log scale zero sits at half the smallest value shown.
    let floor = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min) / 2.0;
    let floor = if floor.is_finite() { floor } else { 1.0 };
    let y = move |v: f64| if log { v.max(floor).log10() } else { v };
    let y0 = y(0.0);
    let top = values().map(y).fold(y0, f64::max);
    let y1 = match (top > y0, log) {
        (false, _) => y0 + 1.0,
        (true, true) => top + 0.3,
        (true, false) => top * 1.15,
    };
    let small = size.1 < 120;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(6);
    if !small {
        builder.caption(&c.title, ("sans-serif", 16)).x_label_area_size(30).y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(e)?;
    if !small {
        let (axis, span, named) = (c.axis, x1 - x0, !c.y_label.is_empty());
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(5)
            .x_label_formatter(&|ms| time_label(*ms, axis, span))
            // An unnamed y axis (rows of values) has no numbers to show.
            .y_label_formatter(&|v| match (named, log) {
                (false, _) => String::new(),
                (true, true) => short_number(10f64.powf(*v)),
                (true, false) => short_number(*v),
            })
            .y_desc(c.y_label.as_str())
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE)
            .draw()
            .map_err(e)?;
    }
    if let Some(Band { label, slots }) = &c.band
        && !slots.is_empty()
    {
        let mut poly: Vec<(i64, f64)> = slots.iter().map(|p| (p.0, y(p.2))).collect();
        poly.extend(slots.iter().rev().map(|p| (p.0, y(p.1))));
        chart
            .draw_series(std::iter::once(Polygon::new(poly, BAND.mix(0.5).filled())))
            .map_err(e)?
            .label(label.as_str())
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BAND.mix(0.5).filled()));
    }
    for (i, s) in c.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let drawn = match s.kind {
            Kind::Line => {
                chart.draw_series(LineSeries::new(s.points.iter().map(|p| (p.0, y(p.1))), colour.stroke_width(2)))
            }
            Kind::Bars { width } => chart.draw_series(
                s.points.iter().map(|&(x, v)| Rectangle::new([(x, y0), (x + width * 4 / 5, y(v))], colour.filled())),
            ),
        }
        .map_err(e)?;
        drawn
            .label(s.label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
    }
    for (i, (label, v)) in c.rules.iter().enumerate() {
        chart.draw_series(LineSeries::new([(x0, y(*v)), (x1, y(*v))], GREY.stroke_width(1))).map_err(e)?;
        // Labels spread along the line, so two close rules stay readable.
        let at = x0 + (x1 - x0) / 8 * (1 + 3 * (i as i64 % 3));
        let text = format!("{label} {}", short_number(*v));
        chart.draw_series(std::iter::once(Text::new(text, (at, y(*v)), ("sans-serif", 13).into_font()))).map_err(e)?;
    }
    for (x, v, label) in &c.marks {
        chart.draw_series(std::iter::once(Circle::new((*x, y(*v)), 4, BLACK.filled()))).map_err(e)?;
        // Labels past the middle end at their point, so they stay inside the chart.
        let h = if *x > x0 + (x1 - x0) / 2 { HPos::Right } else { HPos::Left };
        let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(h, VPos::Bottom));
        let text = Text::new(label.clone(), (*x, y(*v)), style);
        chart.draw_series(std::iter::once(text)).map_err(e)?;
    }
    if !small && (c.series.iter().any(|s| !s.label.is_empty()) || c.band.is_some()) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// A time label of the axis (UTC).
fn time_label(ms: i64, axis: TimeAxis, span: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else { return String::new() };
    let f = match axis {
        TimeAxis::Minutes if span < 10 * 60_000 => "%H:%M:%S",
        TimeAxis::Minutes => "%H:%M",
        TimeAxis::Hours => "%d %H:00",
        TimeAxis::Days if span < 4 * 86_400_000 => "%m-%d %H:00",
        TimeAxis::Days => "%m-%d",
    };
    t.format(f).to_string()
}

/// 12_000_000 → "12.0M", 27_400 → "27.4k", 0.0009 → "0.0009".
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(label: &str) -> Chart {
        Chart {
            title: "tokens per hour".into(),
            y_label: "tokens".into(),
            x: (0, 4 * 3_600_000),
            axis: TimeAxis::Hours,
            series: vec![Series {
                label: label.into(),
                kind: Kind::Line,
                points: vec![(0, 10.0), (3_600_000, 4_500_000.0), (7_200_000, 20.0)],
            }],
            band: Some(Band { label: "seasonal band".into(), slots: vec![(0, 5.0, 30.0), (7_200_000, 5.0, 30.0)] }),
            rules: vec![("p99".into(), 40_000.0)],
            marks: vec![(3_600_000, 0.5, "github.get_file p=0.0009".into())],
            log_y: false,
        }
    }

    /// How the SVG backend writes a text element's content.
    fn text(t: &str) -> String {
        format!(">\n{t}\n</text>")
    }

    #[test]
    fn same_input_same_bytes_and_values_are_text() {
        let a = svg(&chart("tokens"), (640, 240)).unwrap();
        assert_eq!(a, svg(&chart("tokens"), (640, 240)).unwrap());
        assert!(a.starts_with("<svg"), "{}", &a[..a.len().min(80)]);
        assert!(a.contains(&text("p99 40.0k")), "reference lines are named in text");
        assert!(a.contains(&text("seasonal band")) && a.contains(&text("tokens")), "the legend is text");
        assert!(a.contains(&text("github.get_file p=0.0009")));
        assert_ne!(a, svg(&chart("cost"), (640, 240)).unwrap());
        let log = svg(&Chart { log_y: true, ..chart("tokens") }, (640, 240)).unwrap();
        assert!(log.contains(&text("p99 40.0k")) && log != a, "a log scale labels the values, not their logs");
    }

    #[test]
    fn labels_from_logs_are_escaped() {
        let a = svg(&chart("<script>alert(1)</script>"), (640, 240)).unwrap();
        assert!(!a.contains("<script>"));
        assert!(a.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn empty_and_degenerate_charts_draw() {
        let c = Chart { series: vec![], band: None, rules: vec![], marks: vec![], x: (5, 5), ..chart("x") };
        assert!(svg(&c, (640, 240)).unwrap().contains("<svg"));
        assert!(svg(&c, (280, 40)).unwrap().contains("<svg"));
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(short_number(12_000_000.0), "12.0M");
        assert_eq!(short_number(27_400.0), "27.4k");
        assert_eq!(short_number(0.0009), "0.0009");
        assert_eq!(short_number(0.0), "0");
    }
}
