//! The traffic curve: the case study's sale day, compressed unevenly into a drill of a minute
//! or so, and the week-1 baseline steps.
//!
//! The day runs on a *day clock* (hours, 0.0..24.0). Drill time maps to the day clock piece by
//! piece: the quiet night passes fast, the opening half hour gets a fifth of the drill, so a
//! ten-second QPS average (what the tier recommender watches) can see the spike.

/// A named stretch of the day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phase {
    /// Stable name, used in the JSON and the report.
    pub name: &'static str,
    /// Day-clock hour the phase starts at.
    pub start_h: f64,
    /// Day-clock hour the phase ends at.
    pub end_h: f64,
    /// Share of the drill's duration the phase gets.
    pub share: f64,
}

/// The phases of the case study's day (its "traffic curve" section), in order.
pub const PHASES: [Phase; 6] = [
    Phase {
        name: "night",
        start_h: 0.0,
        end_h: 9.0,
        share: 0.12,
    },
    Phase {
        name: "opening",
        start_h: 9.0,
        end_h: 9.5,
        share: 0.20,
    },
    Phase {
        name: "plateau",
        start_h: 9.5,
        end_h: 12.0,
        share: 0.16,
    },
    Phase {
        name: "afternoon",
        start_h: 12.0,
        end_h: 18.0,
        share: 0.22,
    },
    Phase {
        name: "evening",
        start_h: 18.0,
        end_h: 22.0,
        share: 0.20,
    },
    Phase {
        name: "tapering",
        start_h: 22.0,
        end_h: 24.0,
        share: 0.10,
    },
];

/// The case study's peak: 500 requests per second at the opening.
pub const PEAK_QPS: f64 = 500.0;

/// The phase at drill fraction `f` (`0.0..=1.0`) and the day-clock hour.
pub fn at(f: f64) -> (&'static Phase, f64) {
    let f = f.clamp(0.0, 1.0);
    let mut start = 0.0;
    for p in &PHASES {
        let end = start + p.share;
        if f < end || p.name == "tapering" {
            let inside = ((f - start) / p.share).clamp(0.0, 1.0);
            return (p, p.start_h + inside * (p.end_h - p.start_h));
        }
        start = end;
    }
    // Unreachable: the last phase catches everything.
    (&PHASES[5], 24.0)
}

/// The day's request rate at day-clock hour `h`, in the case study's units (requests per
/// second at full scale). Read off the write-up: 1,200 concurrent chats went with 500 QPS,
/// so 500-800 concurrent is about 210-330 QPS, 300-600 about 125-250, 700 about 290.
pub fn day_qps(h: f64) -> f64 {
    let h = h.clamp(0.0, 24.0);
    if h < 9.0 {
        // Slow climb through the night: 10k conversations before nine.
        8.0 + 22.0 * (h / 9.0).powi(2)
    } else if h < 9.5 {
        // Instant 500 at the opening, easing to the 1,200-concurrent peak and below.
        let x = (h - 9.0) / 0.5;
        PEAK_QPS - 170.0 * x
    } else if h < 12.0 {
        // Plateau, 500-800 concurrent, with a slow drift down.
        let x = (h - 9.5) / 2.5;
        330.0 - 90.0 * x + 25.0 * (x * std::f64::consts::PI * 3.0).sin()
    } else if h < 18.0 {
        // Afternoon waves, 300-600 concurrent.
        let x = (h - 12.0) / 6.0;
        185.0 + 60.0 * (x * std::f64::consts::PI * 4.0).sin()
    } else if h < 22.0 {
        // Second peak around 20:00, 700 concurrent.
        let x = (h - 18.0) / 4.0;
        185.0 + 105.0 * (x * std::f64::consts::PI).sin()
    } else {
        // Tapering to the night level.
        let x = (h - 22.0) / 2.0;
        185.0 - 170.0 * x
    }
}

/// Formats a day-clock hour as `HH:MM`.
pub fn clock(h: f64) -> String {
    let mins = (h.clamp(0.0, 24.0) * 60.0).round() as u64;
    format!("{:02}:{:02}", (mins / 60).min(24), mins % 60)
}

/// Expected number of requests in a drill of `duration_s` seconds at `scale` (numerical
/// integral of the curve).
pub fn expected_requests(duration_s: f64, scale: f64) -> f64 {
    let steps = 2000;
    let dt = duration_s / f64::from(steps);
    (0..steps)
        .map(|i| {
            let f = (f64::from(i) + 0.5) / f64::from(steps);
            day_qps(at(f).1) * scale * dt
        })
        .sum()
}

/// The case study's week-1 load test: concurrent chats per step.
pub const BASELINE_STEPS: [u32; 5] = [500, 1_000, 2_000, 5_000, 10_000];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_drill_and_hours_the_day() {
        let total: f64 = PHASES.iter().map(|p| p.share).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(at(0.0).1, 0.0);
        assert!((at(1.0).1 - 24.0).abs() < 1e-9);
        let mut last = -1.0;
        for i in 0..=1000 {
            let (_, h) = at(f64::from(i) / 1000.0);
            assert!(h >= last, "day clock must not run backwards");
            last = h;
        }
        assert_eq!(at(0.13).0.name, "opening");
    }

    #[test]
    fn curve_has_the_case_study_landmarks() {
        assert!((day_qps(9.0) - PEAK_QPS).abs() < 1e-9, "500 QPS at opening");
        assert!(day_qps(8.9) < 40.0, "quiet before opening");
        let plateau = day_qps(10.5);
        assert!((200.0..=360.0).contains(&plateau), "{plateau}");
        let evening = day_qps(20.0);
        assert!((270.0..=300.0).contains(&evening), "{evening}");
        assert!(day_qps(23.9) < 30.0);
        assert!((0..=2400).all(|i| day_qps(f64::from(i) / 100.0) > 0.0));
        assert_eq!(clock(9.0), "09:00");
        assert_eq!(clock(13.7), "13:42");
    }
}
