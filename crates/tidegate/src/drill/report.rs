//! The HTML report: one self-contained page (inline CSS and SVG, no script, no network) with
//! the scorecard and four charts: traffic, first-response percentiles, tier timeline, and the
//! share of answers by source.

use std::fmt::Write as _;

use super::scorecard::Scorecard;

const W: f64 = 920.0;
const H: f64 = 220.0;
const PAD_L: f64 = 56.0;
const PAD_B: f64 = 28.0;
const PAD_T: f64 = 12.0;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<Option<f64>>,
}

fn x_of(i: usize, n: usize) -> f64 {
    PAD_L + (W - PAD_L - 10.0) * (i as f64 + 0.5) / n.max(1) as f64
}

fn y_of(v: f64, max: f64) -> f64 {
    H - PAD_B - (H - PAD_B - PAD_T) * (v / max.max(1e-9)).clamp(0.0, 1.0)
}

fn axes(svg: &mut String, n: usize, max: f64, unit: &str) {
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let y = y_of(v, max);
        let _ = write!(
            svg,
            r##"<line x1="{PAD_L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{}" y="{:.1}" text-anchor="end" class="ax">{}{unit}</text>"##,
            W - 10.0,
            PAD_L - 6.0,
            y + 4.0,
            if max >= 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        );
    }
    let step = (n / 10).max(1);
    for i in (0..n).step_by(step) {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" class="ax">{i}s</text>"##,
            x_of(i, n),
            H - 8.0
        );
    }
}

fn line_chart(title: &str, series: &[Series<'_>], unit: &str) -> String {
    let n = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b))
        * 1.1;
    let mut svg = format!(
        r#"<h3>{}</h3><svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    axes(&mut svg, n, max, unit);
    for s in series {
        let mut d = String::new();
        let mut pen = false;
        for (i, p) in s.points.iter().enumerate() {
            match p {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen { "L" } else { "M" },
                        x_of(i, n),
                        y_of(*v, max)
                    );
                    pen = true;
                }
                None => pen = false,
            }
        }
        let _ = write!(
            svg,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2"/>"#,
            s.color
        );
    }
    svg.push_str("</svg><p class=\"legend\">");
    for s in series {
        let _ = write!(
            svg,
            r#"<span style="color:{}">&#9632;</span> {} &nbsp; "#,
            s.color,
            esc(s.name)
        );
    }
    svg.push_str("</p>");
    svg
}

fn tier_color(t: &str) -> &'static str {
    match t {
        "normal" => "#9ccc9c",
        "economy" => "#f2d675",
        "cache-first" => "#f0a35e",
        "fallback" => "#e06666",
        _ => "#cccccc",
    }
}

fn tier_chart(c: &Scorecard) -> String {
    let n = c.timeline.len();
    let mut svg = format!(
        r#"<h3>Tier timeline (from the tier each reply carried)</h3><svg viewBox="0 0 {W} 60" width="100%" role="img" aria-label="tier timeline">"#
    );
    let bw = (W - PAD_L - 10.0) / n.max(1) as f64;
    let mut last = "normal".to_owned();
    for (i, b) in c.timeline.iter().enumerate() {
        if let Some(t) = &b.tier {
            last.clone_from(t);
        }
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="8" width="{:.1}" height="30" fill="{}"><title>{}s: {}</title></rect>"#,
            PAD_L + bw * i as f64,
            bw + 0.5,
            tier_color(&last),
            i,
            esc(&last)
        );
    }
    for t in &c.tiers {
        let x = PAD_L + (W - PAD_L - 10.0) * (t.at_ms as f64 / 1000.0) / n.max(1) as f64;
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="4" y2="42" stroke="#333" stroke-dasharray="{}"/><text x="{x:.1}" y="55" class="ax" text-anchor="middle">{} {}</text>"##,
            if t.kind == "recommended" { "2,2" } else { "0" },
            esc(&t.clock),
            if t.kind == "recommended" { "rec" } else { "on" }
        );
    }
    svg.push_str("</svg><p class=\"legend\">");
    for t in ["normal", "economy", "cache-first", "fallback"] {
        let _ = write!(
            svg,
            r#"<span style="color:{}">&#9632;</span> {t} &nbsp; "#,
            tier_color(t)
        );
    }
    svg.push_str("(dashed: recommended, solid: activated)</p>");
    svg
}

const SOURCES: [(&str, &str, &str); 8] = [
    ("faq", "#4e9a06", "FAQ cache"),
    ("llm", "#3465a4", "LLM"),
    (
        "llm_dont_know_handoff",
        "#729fcf",
        "LLM \"don't know\" + handoff",
    ),
    ("template_handoff", "#c4a000", "template + handoff"),
    ("error_event_handoff", "#ce5c00", "error event + handoff"),
    ("silent_after_handoff", "#75507b", "silent (human has it)"),
    (
        "refused_with_retry",
        "#888a85",
        "refused, told when to retry",
    ),
    ("no_answer", "#cc0000", "no answer"),
];

fn share_chart(c: &Scorecard) -> String {
    let n = c.timeline.len();
    let mut svg = format!(
        r#"<h3>Share of answers by source, per second</h3><svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="answers by source">"#
    );
    axes(&mut svg, n, 100.0, "%");
    let bw = (W - PAD_L - 10.0) / n.max(1) as f64;
    for (i, b) in c.timeline.iter().enumerate() {
        let total: u64 = b.got.values().sum();
        if total == 0 {
            continue;
        }
        let mut acc = 0.0;
        for (key, color, label) in SOURCES {
            let v = b.got.get(key).copied().unwrap_or(0) as f64 * 100.0 / total as f64;
            if v <= 0.0 {
                continue;
            }
            let y1 = y_of(acc + v, 100.0);
            let y0 = y_of(acc, 100.0);
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{i}s {label}: {v:.0}%</title></rect>"#,
                PAD_L + bw * i as f64,
                bw + 0.3,
                (y0 - y1).max(0.0)
            );
            acc += v;
        }
    }
    svg.push_str("</svg><p class=\"legend\">");
    for (_, color, label) in SOURCES {
        let _ = write!(
            svg,
            r#"<span style="color:{color}">&#9632;</span> {label} &nbsp; "#
        );
    }
    svg.push_str("</p>");
    svg
}

/// The whole page.
pub fn render(c: &Scorecard) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tidegate drill scorecard</title>
<style>body{{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:24px auto;padding:0 12px;color:#222}}
table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{border:1px solid #ddd;padding:4px 10px;text-align:left}}
th{{background:#f4f4f4}}.met{{color:#2e7d32;font-weight:600}}.missed{{color:#c62828;font-weight:600}}
.ax{{font-size:11px;fill:#666}}.legend{{font-size:12px;color:#444;margin-top:0}}pre{{background:#f7f7f7;padding:10px;overflow:auto;font-size:12px}}</style>
</head><body><h1>tidegate drill scorecard</h1>
<p>{} profile, {:.0} s, scale {} (seed {}). {} requests, {} customer conversations, peak {} req/s. Every figure is computed from what the clients received.</p>"#,
        esc(c.profile),
        c.elapsed_s,
        c.scale,
        c.seed,
        c.requests,
        c.conversations,
        c.peak_qps
    );
    h.push_str("<table><tr><th>Metric</th><th>Target</th><th>Case study</th><th>This drill</th><th></th></tr>");
    for r in &c.rows {
        let (cls, word) = match r.met {
            Some(true) => ("met", "met"),
            Some(false) => ("missed", "missed"),
            None => ("", "-"),
        };
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="{cls}">{word}</td></tr>"#,
            esc(r.metric),
            esc(r.target),
            esc(r.case_study),
            esc(&r.actual)
        );
    }
    h.push_str("</table>");
    let sent: Vec<Option<f64>> = c.timeline.iter().map(|b| Some(b.sent as f64)).collect();
    let origin: Vec<Option<f64>> = c.timeline.iter().map(|b| Some(b.origin as f64)).collect();
    h.push_str(&line_chart(
        "Traffic: requests per second (sent by clients) and LLM calls",
        &[
            Series {
                name: "requests sent",
                color: "#3465a4",
                points: sent,
            },
            Series {
                name: "reached the LLM origin",
                color: "#cc0000",
                points: origin,
            },
        ],
        "",
    ));
    let p50: Vec<Option<f64>> = c
        .timeline
        .iter()
        .map(|b| b.p50_ms.map(|v| v as f64 / 1000.0))
        .collect();
    let p95: Vec<Option<f64>> = c
        .timeline
        .iter()
        .map(|b| b.p95_ms.map(|v| v as f64 / 1000.0))
        .collect();
    h.push_str(&line_chart(
        "First response (time to first answer text), by second sent",
        &[
            Series {
                name: "p50",
                color: "#4e9a06",
                points: p50,
            },
            Series {
                name: "p95",
                color: "#ce5c00",
                points: p95,
            },
        ],
        "s",
    ));
    h.push_str(&tier_chart(c));
    h.push_str(&share_chart(c));
    if !c.baseline.is_empty() {
        h.push_str("<h3>Baseline steps</h3><table><tr><th>Step</th><th>Chats</th><th>Requests</th><th>Errors</th><th>p95</th><th>Verdict</th></tr>");
        for s in &c.baseline {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                s.step,
                s.users,
                s.requests,
                s.errors,
                s.p95_ms
                    .map_or("-".into(), |v| format!("{:.2} s", v as f64 / 1000.0)),
                s.verdict
            );
        }
        h.push_str("</table>");
    }
    let _ = writeln!(
        h,
        "<h3>Full scorecard</h3><pre>{}</pre></body></html>",
        esc(&super::scorecard::render_text(c))
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
