//! Pictures of a run: the latency distribution per class, delivery progress over time against
//! the expected total and the bounds the run knows, and the bytes each node wrote and read.
//!
//! A run keeps [`PlotData`], which is bounded whatever the run's size: at most [`CDF_POINTS`]
//! points per class and [`TIMELINE_BINS`] bins of delivered bytes, plus one entry per node.
//! [`svgs`] draws it with plotters' SVG backend (text as SVG `<text>` elements: no fonts are
//! read), and [`write_report`] writes one self-contained HTML page with the SVGs inline, and each
//! SVG as a file of its own. The same data always gives the same bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::coord::Shift;
use plotters::prelude::*;

/// At most this many points of a class's latency distribution are kept (quantiles of it).
pub const CDF_POINTS: usize = 200;

/// Bins of a [`Timeline`]; past them it doubles its bin width and merges pairs of bins.
pub const TIMELINE_BINS: usize = 512;

/// The first bin width of a [`Timeline`].
const FIRST_BIN: Duration = Duration::from_millis(1);

/// The size of every picture, pixels.
const SIZE: (u32, u32) = (720, 420);

/// Why the pictures could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// Plotters failed to draw a picture.
    #[error("cannot draw the {what} picture: {message}")]
    Draw {
        /// Which picture.
        what: &'static str,
        /// Plotters' message.
        message: String,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The latency distribution of one class, as a downsampled cumulative distribution.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassCdf {
    /// The class (`urgent`, `bulk`).
    pub class: String,
    /// (artifact, node) deliveries measured.
    pub deliveries: u64,
    /// (latency in ms, fraction of the deliveries at most that late), ascending; at most
    /// [`CDF_POINTS`], always the fastest and the slowest delivery.
    pub points: Vec<(f64, f64)>,
}

impl ClassCdf {
    /// The distribution of `sorted` (ascending), each sample's latency in ms given by `ms`.
    pub fn from_sorted<T: Copy>(class: &str, sorted: &[T], ms: impl Fn(T) -> f64) -> Self {
        let n = sorted.len();
        let point = |i: usize| (ms(sorted[i]), (i + 1) as f64 / n as f64);
        let points = if n <= CDF_POINTS {
            (0..n).map(point).collect()
        } else {
            // The fastest, then the sample at every 1/(CDF_POINTS - 1) of the ranks, ending on
            // the slowest.
            let steps = CDF_POINTS - 1;
            std::iter::once(0)
                .chain((1..=steps).map(|k| (k * n).div_ceil(steps) - 1))
                .map(point)
                .collect()
        };
        ClassCdf {
            class: class.to_owned(),
            deliveries: n as u64,
            points,
        }
    }
}

/// Payload bytes delivered over time, in at most [`TIMELINE_BINS`] bins of equal width (1 ms,
/// doubled as often as the run's length needs). The bins depend only on the deliveries, not on
/// the order they were added in.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    bin: Duration,
    bins: Vec<u64>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            bin: FIRST_BIN,
            bins: Vec::new(),
        }
    }
}

impl Timeline {
    /// Counts `bytes` delivered `at` after the run's start.
    pub fn add(&mut self, at: Duration, bytes: u64) {
        while at.as_nanos() / self.bin.as_nanos() >= TIMELINE_BINS as u128 {
            self.coarsen();
        }
        let i = (at.as_nanos() / self.bin.as_nanos()) as usize;
        if self.bins.len() <= i {
            self.bins.resize(i + 1, 0);
        }
        self.bins[i] += bytes;
    }

    /// Doubles the bin width, merging each pair of bins.
    fn coarsen(&mut self) {
        self.bin *= 2;
        self.bins = self.bins.chunks(2).map(|p| p.iter().sum()).collect();
    }

    /// The width of a bin.
    pub fn bin(&self) -> Duration {
        self.bin
    }

    /// The bytes delivered by the end of each bin: (seconds since the start, bytes), from
    /// (0, 0) to the bin of the last delivery.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        std::iter::once((0.0, 0))
            .chain(self.bins.iter().enumerate().map(|(i, b)| {
                total += b;
                ((i + 1) as f64 * self.bin.as_secs_f64(), total)
            }))
            .collect()
    }

    /// Every byte counted.
    pub fn total(&self) -> u64 {
        self.bins.iter().sum()
    }
}

/// A lower bound of the time to full delivery that the run knows, drawn on its progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    /// Seconds from the start.
    pub seconds: f64,
    /// What bounds it (e.g. `link bound`).
    pub label: String,
}

/// Bytes one node wrote to and read from its sockets during the run (TLS records included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeBytes {
    /// Bytes written.
    pub written: u64,
    /// Bytes read.
    pub read: u64,
}

/// What the pictures of one workload run are drawn from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlotData {
    /// The latency distribution per class.
    pub latency: Vec<ClassCdf>,
    /// Payload bytes delivered over time (every class, every receiver).
    pub progress: Timeline,
    /// Payload bytes the run delivers when complete: each artifact to every node but its
    /// origin.
    pub expected_bytes: u64,
    /// Lower bounds of the time to full delivery, if the run knows any.
    pub bounds: Vec<Bound>,
    /// Socket bytes per node, by index.
    pub nodes: Vec<NodeBytes>,
}

/// The three pictures of a run, as SVG documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Svgs {
    /// The latency distribution per class (cumulative, log time axis).
    pub latency: String,
    /// Delivery progress over time against the expected total and the bounds.
    pub progress: String,
    /// Bytes written and read per node.
    pub traffic: String,
}

impl Svgs {
    /// (file name suffix, SVG) of each picture.
    pub fn parts(&self) -> [(&'static str, &str); 3] {
        [
            ("latency", &self.latency),
            ("progress", &self.progress),
            ("traffic", &self.traffic),
        ]
    }
}

/// The colour of series `i` of a picture.
fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 6] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
    ];
    COLOURS[i % COLOURS.len()]
}

/// The colour of a latency class: urgent red, bulk blue, others after them.
fn class_colour(class: &str, i: usize) -> RGBColor {
    match class {
        "urgent" => colour(0),
        "bulk" => colour(1),
        _ => colour(2 + i),
    }
}

const GREY: RGBColor = RGBColor(110, 110, 110);

/// Draws the three pictures of a run titled `title`.
pub fn svgs(title: &str, data: &PlotData) -> Result<Svgs, PlotError> {
    Ok(Svgs {
        latency: draw("latency", |root| latency(root, title, data))?,
        progress: draw("progress", |root| progress(root, title, data))?,
        traffic: draw("traffic", |root| traffic(root, title, data))?,
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error + 'static>>;

/// An SVG document drawn by `f` on a white area of [`SIZE`].
fn draw(what: &'static str, f: impl FnOnce(&Area<'_>) -> Drawn) -> Result<String, PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        what,
        message: e.to_string(),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        f(&root).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// A chart's caption: the picture, then the run's title in smaller type.
fn caption<'a>(
    root: &Area<'a>,
    what: &str,
    title: &str,
) -> Result<Area<'a>, Box<dyn std::error::Error>> {
    let (head, body) = root.split_vertically(44);
    head.draw(&Text::new(
        what.to_owned(),
        (10, 6),
        ("sans-serif", 17).into_font().color(&BLACK),
    ))?;
    head.draw(&Text::new(
        title.to_owned(),
        (10, 26),
        ("sans-serif", 13).into_font().color(&GREY),
    ))?;
    Ok(body)
}

/// A note in the middle of an empty chart.
fn empty(area: &Area<'_>, note: &str) -> Drawn {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        note.to_owned(),
        (w as i32 / 2 - 4 * note.len() as i32, h as i32 / 2),
        ("sans-serif", 15).into_font().color(&GREY),
    ))?;
    Ok(())
}

/// The latency distribution per class: a cumulative line per class on a log time axis.
fn latency(root: &Area<'_>, title: &str, data: &PlotData) -> Drawn {
    let body = caption(
        root,
        "Latency from publish to delivery, per (artifact, node)",
        title,
    )?;
    let all = || {
        data.latency
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.0))
    };
    // A log axis needs positive bounds: deliveries faster than a microsecond sit on it.
    let lo = all().fold(f64::INFINITY, f64::min).max(1e-3);
    let hi = all().fold(0.0, f64::max).max(lo * 10.0);
    if data.latency.iter().all(|c| c.points.is_empty()) {
        return empty(&body, "no deliveries");
    }
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((lo / 1.5..hi * 1.5).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("fraction of deliveries")
        .x_label_formatter(&|x| ms_label(*x))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .x_labels(8)
        // Only the decades and the labelled ticks: a log axis has many minor ones.
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (i, c) in data.latency.iter().enumerate() {
        let col = class_colour(&c.class, i);
        let pts = c.points.iter().map(|&(x, y)| (x.max(lo), y));
        chart
            .draw_series(LineSeries::new(pts, col.stroke_width(2)))?
            .label(format!("{} ({} deliveries)", c.class, c.deliveries))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .draw()?;
    Ok(())
}

/// A latency tick: `0.1`, `5`, `250` (ms), as many digits as it needs.
fn ms_label(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

const MB: f64 = 1e6;

/// A tick of an axis of MB that reaches `max`: whole MB from 10 MB on, else as many decimals
/// as small values need.
fn mb_label(y: f64, max: f64) -> String {
    if max >= 10.0 {
        format!("{y:.0}")
    } else if max >= 1.0 {
        format!("{y:.1}")
    } else {
        format!("{y:.3}")
    }
}

/// Delivered payload over time, with the expected total and the bounds as dashed lines.
fn progress(root: &Area<'_>, title: &str, data: &PlotData) -> Drawn {
    let body = caption(
        root,
        "Delivery progress: payload delivered over time",
        title,
    )?;
    let curve = data.progress.cumulative();
    let end = curve.last().map_or(0.0, |p| p.0);
    let t_max = data
        .bounds
        .iter()
        .map(|b| b.seconds)
        .fold(end, f64::max)
        .max(1e-3)
        * 1.05;
    let expected = data.expected_bytes as f64 / MB;
    let y_max = (data.progress.total() as f64 / MB).max(expected).max(1e-6) * 1.08;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("payload delivered, MB")
        .y_label_formatter(&|y| mb_label(*y, y_max))
        .max_light_lines(4)
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let blue = colour(1);
    chart
        .draw_series(LineSeries::new(
            curve.iter().map(|&(t, b)| (t, b as f64 / MB)),
            blue.stroke_width(2),
        ))?
        .label(format!(
            "delivered ({:.1} MB by {:.3} s)",
            data.progress.total() as f64 / MB,
            end
        ))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], blue.stroke_width(2)));
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, expected), (t_max, expected)],
            6,
            4,
            GREY.stroke_width(1),
        ))?
        .label(format!("expected total ({expected:.1} MB)"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], GREY.stroke_width(1)));
    for (i, b) in data.bounds.iter().enumerate() {
        let col = colour(i * 2);
        chart
            .draw_series(DashedLineSeries::new(
                [(b.seconds, 0.0), (b.seconds, y_max)],
                6,
                4,
                col.stroke_width(2),
            ))?
            .label(format!("{} ({:.3} s)", b.label, b.seconds))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .draw()?;
    Ok(())
}

/// Bytes written and read per node: two bars per node.
fn traffic(root: &Area<'_>, title: &str, data: &PlotData) -> Drawn {
    let body = caption(
        root,
        "Socket bytes per node during the run (TLS included)",
        title,
    )?;
    if data.nodes.is_empty() {
        return empty(&body, "no nodes");
    }
    let n = data.nodes.len();
    let top = data
        .nodes
        .iter()
        .map(|b| b.written.max(b.read))
        .max()
        .unwrap_or(0) as f64
        / MB;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..top.max(1e-6) * 1.25)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.min(40))
        .x_label_formatter(&|x| {
            // Only whole positions are nodes.
            if (x - x.round()).abs() < 1e-9 && *x >= 0.0 {
                format!("{}", x.round() as u64)
            } else {
                String::new()
            }
        })
        .x_desc("node")
        .y_desc("MB")
        .y_label_formatter(&|y| mb_label(*y, top))
        .max_light_lines(4)
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let (red, blue) = (colour(0), colour(1));
    let bars = |value: fn(&NodeBytes) -> u64, from: f64, to: f64, col: RGBColor| {
        data.nodes.iter().enumerate().map(move |(i, b)| {
            let x = i as f64;
            Rectangle::new(
                [(x + from, 0.0), (x + to, value(b) as f64 / MB)],
                col.filled(),
            )
        })
    };
    chart
        .draw_series(bars(|b| b.written, -0.4, 0.0, red))?
        .label("written (sent)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], red.filled()));
    chart
        .draw_series(bars(|b| b.read, 0.0, 0.4, blue))?
        .label("read (received)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], blue.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .draw()?;
    Ok(())
}

/// One workload of a report page.
#[derive(Clone, Copy, Debug)]
pub struct Section<'a> {
    /// Short name (`W2`); the prefix of its SVG files.
    pub name: &'a str,
    /// One line saying what ran.
    pub title: &'a str,
    /// Lines of figures shown above the pictures.
    pub summary: &'a [String],
    /// The data.
    pub data: &'a PlotData,
}

impl Section<'_> {
    /// `name: title`, or the title alone if it starts with the name.
    fn heading(&self) -> String {
        if self.title.starts_with(self.name) {
            self.title.to_owned()
        } else {
            format!("{}: {}", self.name, self.title)
        }
    }
}

/// A file name made of `name`: ASCII letters, digits, `-`, `_` and `.` kept, the rest `_`.
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '&' => s.push_str("&amp;"),
            '"' => s.push_str("&quot;"),
            _ => s.push(c),
        }
    }
    s
}

/// The self-contained HTML page (XHTML-compatible) of `sections`, each with its SVGs inline.
pub fn html(heading: &str, lines: &[String], sections: &[(Section<'_>, Svgs)]) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    let _ = writeln!(s, "<title>{}</title>", escape(heading));
    s.push_str(
        "<style>body{font-family:sans-serif;margin:2em;max-width:760px}\
         h1,h2{overflow-wrap:anywhere}p.fig{color:#444;margin:0.2em 0}\
         svg{display:block;margin:1em 0}</style>\n",
    );
    s.push_str("</head>\n<body>\n");
    let _ = writeln!(s, "<h1>{}</h1>", escape(heading));
    for l in lines {
        let _ = writeln!(s, "<p>{}</p>", escape(l));
    }
    for (sec, svgs) in sections {
        let _ = writeln!(
            s,
            "<h2 id=\"{}\">{}</h2>",
            file_stem(sec.name),
            escape(&sec.heading())
        );
        for l in sec.summary {
            let _ = writeln!(s, "<p class=\"fig\">{}</p>", escape(l));
        }
        for (_, svg) in svgs.parts() {
            s.push_str(svg);
            s.push('\n');
        }
    }
    s.push_str("</body>\n</html>\n");
    s
}

/// Writes `dir/report.html` (every section, SVGs inline) and `dir/<name>-latency.svg`,
/// `-progress.svg` and `-traffic.svg` for each section, creating `dir`. Returns the paths
/// written, the page first.
pub fn write_report(
    dir: &Path,
    heading: &str,
    lines: &[String],
    sections: &[Section<'_>],
) -> Result<Vec<PathBuf>, PlotError> {
    let drawn = sections
        .iter()
        .map(|sec| Ok((*sec, svgs(&sec.heading(), sec.data)?)))
        .collect::<Result<Vec<_>, PlotError>>()?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PlotError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let page = dir.join("report.html");
    std::fs::write(&page, html(heading, lines, &drawn)).map_err(io(&page))?;
    let mut written = vec![page];
    for (sec, svgs) in &drawn {
        for (part, svg) in svgs.parts() {
            let path = dir.join(format!("{}-{part}.svg", file_stem(sec.name)));
            std::fs::write(&path, svg).map_err(io(&path))?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn a_cdf_keeps_the_extremes_and_at_most_its_points() {
        let v: Vec<u64> = (1..=10_000).collect();
        let c = ClassCdf::from_sorted("urgent", &v, |x| x as f64);
        assert_eq!(c.deliveries, 10_000);
        assert_eq!(c.points.len(), CDF_POINTS);
        assert_eq!(c.points[0], (1.0, 1e-4));
        assert_eq!(*c.points.last().unwrap(), (10_000.0, 1.0));
        assert!(
            c.points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        );
        // The median is on it, at its rank.
        assert!(c.points.iter().any(|p| (p.1 - 0.5).abs() < 0.003));
        let few = ClassCdf::from_sorted("bulk", &[ms(3), ms(5), ms(9)], |d| d.as_secs_f64() * 1e3);
        let want = [(3.0, 1.0 / 3.0), (5.0, 2.0 / 3.0), (9.0, 1.0)];
        assert_eq!(few.points.len(), 3);
        for (p, w) in few.points.iter().zip(want) {
            assert!(
                (p.0 - w.0).abs() < 1e-9 && (p.1 - w.1).abs() < 1e-12,
                "{p:?}"
            );
        }
        assert!(
            ClassCdf::from_sorted::<u64>("x", &[], |x| x as f64)
                .points
                .is_empty()
        );
    }

    #[test]
    fn a_timeline_stays_bounded_and_ignores_the_order_of_deliveries() {
        let deliveries: Vec<(Duration, u64)> = (0..5_000u64)
            .map(|i| (Duration::from_micros(i * 7_919 % 60_000_000), i % 97 + 1))
            .collect();
        let mut a = Timeline::default();
        for &(at, b) in &deliveries {
            a.add(at, b);
        }
        let mut b = Timeline::default();
        for &(at, n) in deliveries.iter().rev() {
            b.add(at, n);
        }
        assert_eq!(a, b);
        assert!(a.bins.len() <= TIMELINE_BINS);
        // 60 s in at most 512 bins of 1 ms doubled: 128 ms.
        assert_eq!(a.bin(), ms(128));
        let total: u64 = deliveries.iter().map(|d| d.1).sum();
        assert_eq!(a.total(), total);
        let c = a.cumulative();
        assert_eq!(c[0], (0.0, 0));
        assert_eq!(c.last().unwrap().1, total);
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let mut one = Timeline::default();
        one.add(ms(2), 10);
        assert_eq!(
            one.cumulative(),
            vec![(0.0, 0), (0.001, 0), (0.002, 0), (0.003, 10)]
        );
    }

    /// A run of 5 nodes: 50 urgent deliveries, 7 bulk ones, a link bound.
    fn synthetic() -> PlotData {
        let urgent: Vec<u64> = (1..=50).map(|i| i * 20).collect();
        let bulk: Vec<u64> = (1..=7).map(|i| i * 40_000).collect();
        let mut progress = Timeline::default();
        for i in 0..400u64 {
            progress.add(Duration::from_micros(i * 2_000), 100_000);
        }
        PlotData {
            latency: vec![
                ClassCdf::from_sorted("urgent", &urgent, |us| us as f64 / 1e3),
                ClassCdf::from_sorted("bulk", &bulk, |us| us as f64 / 1e3),
            ],
            progress,
            expected_bytes: 40_000_000,
            bounds: vec![Bound {
                seconds: 2.5,
                label: "link bound".into(),
            }],
            nodes: (1..=5)
                .map(|i| NodeBytes {
                    written: i * 1_000_000,
                    read: 6_000_000 - i * 500_000,
                })
                .collect(),
        }
    }

    fn parse(svg: &str) -> roxmltree::Document<'_> {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc
    }

    fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
            .collect()
    }

    /// The number of points of every polyline drawn in `colour`.
    fn lines_in(doc: &roxmltree::Document<'_>, colour: RGBColor) -> Vec<usize> {
        let c = format!("#{:02X}{:02X}{:02X}", colour.0, colour.1, colour.2);
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(&c))
            .map(|n| {
                n.attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count()
            })
            .collect()
    }

    fn rects_in(doc: &roxmltree::Document<'_>, colour: RGBColor) -> usize {
        let c = format!("#{:02X}{:02X}{:02X}", colour.0, colour.1, colour.2);
        doc.descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(&c))
            .count()
    }

    #[test]
    fn the_pictures_of_a_run_are_well_formed_show_every_series_and_are_deterministic() {
        let data = synthetic();
        let s = svgs("W9: a <test> & more", &data).unwrap();
        assert_eq!(s, svgs("W9: a <test> & more", &data).unwrap());

        let lat = parse(&s.latency);
        let t = texts(&lat);
        assert!(t.contains(&"urgent (50 deliveries)".to_owned()), "{t:?}");
        assert!(t.contains(&"bulk (7 deliveries)".to_owned()), "{t:?}");
        assert!(t.contains(&"W9: a <test> & more".to_owned()), "{t:?}");
        // One line per class with every point, and its legend's mark.
        assert_eq!(lines_in(&lat, colour(0)), vec![50, 2]);
        assert_eq!(lines_in(&lat, colour(1)), vec![7, 2]);

        let prog = parse(&s.progress);
        let t = texts(&prog);
        assert!(t.contains(&"link bound (2.500 s)".to_owned()), "{t:?}");
        assert!(t.contains(&"expected total (40.0 MB)".to_owned()), "{t:?}");
        assert!(
            t.contains(&"delivered (40.0 MB by 0.800 s)".to_owned()),
            "{t:?}"
        );
        // The curve: (0, 0) and one point per bin (400 deliveries 2 ms apart in 1 ms bins
        // of 0.8 s: 512 bins at most, so 2 ms bins, 400 of them).
        assert_eq!(data.progress.bin(), ms(2));
        assert_eq!(lines_in(&prog, colour(1)), vec![401, 2]);

        let traffic = parse(&s.traffic);
        // A bar per node and a legend mark, for each direction.
        assert_eq!(rects_in(&traffic, colour(0)), 6);
        assert_eq!(rects_in(&traffic, colour(1)), 6);
        let t = texts(&traffic);
        for label in ["written (sent)", "read (received)", "0", "4"] {
            assert!(t.contains(&label.to_owned()), "{label} in {t:?}");
        }
        assert!(!t.contains(&"5".to_owned()), "5 nodes: 0 to 4, {t:?}");
    }

    #[test]
    fn empty_data_still_draws_three_pictures() {
        let s = svgs("nothing", &PlotData::default()).unwrap();
        for (_, svg) in s.parts() {
            parse(svg);
        }
        assert!(texts(&parse(&s.latency)).contains(&"no deliveries".to_owned()));
        assert!(texts(&parse(&s.traffic)).contains(&"no nodes".to_owned()));
    }

    #[test]
    fn the_report_page_holds_every_picture_inline_and_the_files_are_written() {
        let data = synthetic();
        let summary = vec!["time 1.0 s & more".to_owned()];
        let sections = [
            Section {
                name: "W2",
                title: "blocks",
                summary: &summary,
                data: &data,
            },
            Section {
                name: "a/b c",
                title: "custom <x>",
                summary: &[],
                data: &data,
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pics");
        let written = write_report(&out, "p2p-bench", &["machine: x".into()], &sections).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(&out).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "report.html",
                "W2-latency.svg",
                "W2-progress.svg",
                "W2-traffic.svg",
                "a_b_c-latency.svg",
                "a_b_c-progress.svg",
                "a_b_c-traffic.svg"
            ]
        );
        let page = std::fs::read_to_string(&written[0]).unwrap();
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(&page, options)
            .unwrap_or_else(|e| panic!("{e}"));
        let svgs: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("svg"))
            .collect();
        assert_eq!(svgs.len(), 6, "three pictures per section");
        let h2: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("h2"))
            .filter_map(|n| n.text().map(str::trim))
            .collect();
        assert_eq!(h2, ["W2: blocks", "a/b c: custom <x>"]);
        assert!(page.contains("<p class=\"fig\">time 1.0 s &amp; more</p>"));
        // Self-contained: nothing is loaded from elsewhere.
        for attr in ["src=", "href=", "@import", "url("] {
            assert!(!page.contains(attr), "{attr}");
        }
        for p in &written[1..] {
            let svg = std::fs::read_to_string(p).unwrap();
            parse(&svg);
            assert!(page.contains(&svg), "{} is inline", p.display());
        }
    }
}
