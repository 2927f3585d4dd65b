//! Sweep decisions as pure functions (groundwork for `type: sweep` jobs): sampling a search
//! space (random with a seed, grid, and a model-based "bayesian" sampler — a Tree-structured
//! Parzen Estimator), and the early-termination policies (bandit, median stopping, truncation
//! selection). The sweep controller will feed these the trials' metrics and act on the answers.
//!
//! The random generator is a small SplitMix64 written here on purpose: a sweep's `seed` must
//! give the same trials in every Tarn version, which general-purpose RNG crates do not promise.

use serde_json::Value as Json;

/// One hyperparameter's distribution, as Azure ML writes them. For `loguniform`/`qloguniform`
/// the bounds are exponents (`exp(uniform(min, max))`), as in Azure ML.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Choice(Vec<Json>),
    RandInt { upper: i64 },
    Uniform { min: f64, max: f64, q: Option<f64> },
    LogUniform { min: f64, max: f64, q: Option<f64> },
    Normal { mu: f64, sigma: f64, q: Option<f64> },
    LogNormal { mu: f64, sigma: f64, q: Option<f64> },
}

impl Expr {
    /// Reads a normalised `search_space` entry.
    pub fn parse(spec: &Json) -> Result<Expr, String> {
        let num = |k: &str| {
            spec.get(k)
                .and_then(Json::as_f64)
                .ok_or_else(|| format!("{k} must be a number"))
        };
        let q = spec.get("q").and_then(Json::as_f64);
        let ty = spec.get("type").and_then(Json::as_str).unwrap_or_default();
        Ok(match ty {
            "choice" => Expr::Choice(
                spec.get("values")
                    .and_then(Json::as_array)
                    .cloned()
                    .filter(|v| !v.is_empty())
                    .ok_or("choice needs a non-empty `values` list")?,
            ),
            "randint" => Expr::RandInt {
                upper: num("upper")? as i64,
            },
            "uniform" | "quniform" => Expr::Uniform {
                min: num("min_value")?,
                max: num("max_value")?,
                q,
            },
            "loguniform" | "qloguniform" => Expr::LogUniform {
                min: num("min_value")?,
                max: num("max_value")?,
                q,
            },
            "normal" | "qnormal" => Expr::Normal {
                mu: num("mu")?,
                sigma: num("sigma")?,
                q,
            },
            "lognormal" | "qlognormal" => Expr::LogNormal {
                mu: num("mu")?,
                sigma: num("sigma")?,
                q,
            },
            other => return Err(format!("unknown search expression type {other:?}")),
        })
    }

    /// A value from a uniform draw `u` in [0, 1) (and a standard normal `z` for the normals).
    fn value(&self, u: f64, z: f64) -> Json {
        let quantize = |x: f64, q: Option<f64>| match q {
            Some(q) if q > 0.0 => (x / q).round() * q,
            _ => x,
        };
        let number = |x: f64| serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number);
        match self {
            Expr::Choice(values) => {
                values[((u * values.len() as f64) as usize).min(values.len() - 1)].clone()
            }
            Expr::RandInt { upper } => {
                Json::from(((u * *upper as f64) as i64).min(upper - 1).max(0))
            }
            Expr::Uniform { min, max, q } => number(quantize(min + u * (max - min), *q)),
            Expr::LogUniform { min, max, q } => number(quantize((min + u * (max - min)).exp(), *q)),
            Expr::Normal { mu, sigma, q } => number(quantize(mu + sigma * z, *q)),
            Expr::LogNormal { mu, sigma, q } => number(quantize((mu + sigma * z).exp(), *q)),
        }
    }
}

/// SplitMix64: tiny, fast, and the same numbers for a seed forever.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Sobol direction-number parameters (Joe & Kuo, `new-joe-kuo-6.21201`) for dimensions 2–12:
/// (degree s, coefficients a, initial m values). Dimension 1 is van der Corput's sequence.
const SOBOL: &[(u32, u32, &[u32])] = &[
    (1, 0, &[1]),
    (2, 1, &[1, 3]),
    (3, 1, &[1, 3, 1]),
    (3, 2, &[1, 1, 1]),
    (4, 1, &[1, 1, 3, 3]),
    (4, 4, &[1, 3, 5, 13]),
    (5, 2, &[1, 1, 5, 5, 17]),
    (5, 4, &[1, 1, 5, 5, 5]),
    (5, 7, &[1, 1, 7, 11, 19]),
    (5, 11, &[1, 1, 5, 1, 1]),
    (5, 13, &[1, 1, 1, 3, 11]),
];

/// The most parameters the Sobol rule covers.
pub const SOBOL_MAX_DIMENSIONS: usize = SOBOL.len() + 1;

const SOBOL_BITS: u32 = 32;

/// Direction numbers of one dimension (0-based), scaled to 32 bits.
fn sobol_directions(dim: usize) -> [u32; SOBOL_BITS as usize] {
    let mut v = [0u32; SOBOL_BITS as usize];
    if dim == 0 {
        for (i, d) in v.iter_mut().enumerate() {
            *d = 1 << (SOBOL_BITS - 1 - i as u32);
        }
        return v;
    }
    let (s, a, m) = SOBOL[dim - 1];
    let s = s as usize;
    for i in 0..SOBOL_BITS as usize {
        if i < s {
            v[i] = m[i] << (SOBOL_BITS - 1 - i as u32);
        } else {
            let mut x = v[i - s] ^ (v[i - s] >> s);
            for k in 1..s {
                if (a >> (s - 1 - k)) & 1 == 1 {
                    x ^= v[i - k];
                }
            }
            v[i] = x;
        }
    }
    v
}

/// The `index`-th point of the Sobol sequence in `dims` dimensions, each in [0, 1) (Gray-code
/// construction; `index` 0 is the origin).
pub fn sobol(index: u64, dims: usize) -> Vec<f64> {
    let gray = index ^ (index >> 1);
    (0..dims)
        .map(|d| {
            let v = sobol_directions(d);
            let mut x = 0u32;
            for (bit, dv) in v.iter().enumerate() {
                if (gray >> bit) & 1 == 1 {
                    x ^= dv;
                }
            }
            x as f64 / (1u64 << SOBOL_BITS) as f64
        })
        .collect()
}

/// The point of trial `index` from the Sobol sequence (skipping the origin; `seed` shifts the
/// start). Normal distributions take the sequence through the inverse normal CDF.
pub fn sobol_point(space: &[(String, Expr)], index: u64, seed: u64) -> Result<Point, String> {
    if space.len() > SOBOL_MAX_DIMENSIONS {
        return Err(format!(
            "the sobol rule covers at most {SOBOL_MAX_DIMENSIONS} parameters; use rule: random"
        ));
    }
    let u = sobol(index + 1 + seed, space.len());
    Ok(space
        .iter()
        .zip(u)
        .map(|((name, e), u)| (name.clone(), e.value(u, inverse_normal(u))))
        .collect())
}

/// The standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
fn inverse_normal(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A point in a search space: parameter name → value.
pub type Point = Vec<(String, Json)>;

/// A random point.
pub fn random_point(space: &[(String, Expr)], rng: &mut Rng) -> Point {
    space
        .iter()
        .map(|(name, e)| {
            let (u, z) = (rng.uniform(), rng.normal());
            (name.clone(), e.value(u, z))
        })
        .collect()
}

/// Every point of a grid; only `choice` parameters make a grid (as in Azure ML).
pub fn grid(space: &[(String, Expr)]) -> Result<Vec<Point>, String> {
    let mut points: Vec<Point> = vec![vec![]];
    for (name, e) in space {
        let Expr::Choice(values) = e else {
            return Err(format!(
                "grid sampling needs choice() for every parameter; {name} is not a choice"
            ));
        };
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut p = p.clone();
                    p.push((name.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    Ok(points)
}

/// The next point from a Tree-structured Parzen Estimator: finished trials are split into the
/// best `GAMMA` share and the rest; candidates drawn around the good trials are scored by how
/// much likelier they are under the good density than under the bad one; the best candidate
/// wins. With too few finished trials it samples at random.
pub fn tpe_point(
    space: &[(String, Expr)],
    history: &[(Point, f64)],
    maximize: bool,
    rng: &mut Rng,
) -> Point {
    const GAMMA: f64 = 0.25;
    const STARTUP: usize = 5;
    const CANDIDATES: usize = 24;
    if history.len() < STARTUP {
        return random_point(space, rng);
    }
    let mut sorted: Vec<&(Point, f64)> = history.iter().collect();
    sorted.sort_by(|a, b| {
        let o = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
        if maximize { o.reverse() } else { o }
    });
    let n_good = ((sorted.len() as f64 * GAMMA).ceil() as usize).max(1);
    let (good, bad) = sorted.split_at(n_good);
    let mut point = vec![];
    for (name, e) in space {
        let coord = |p: &Point| p.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let goods: Vec<Json> = good.iter().filter_map(|(p, _)| coord(p)).collect();
        let bads: Vec<Json> = bad.iter().filter_map(|(p, _)| coord(p)).collect();
        let value = match e {
            Expr::Choice(values) => {
                // Categorical: smoothed frequencies, the best ratio among sampled candidates.
                let weight = |set: &[Json], v: &Json| {
                    (set.iter().filter(|x| *x == v).count() as f64 + 1.0)
                        / (set.len() + values.len()) as f64
                };
                let mut best = (values[0].clone(), f64::MIN);
                for _ in 0..CANDIDATES {
                    let v = e.value(rng.uniform(), 0.0);
                    let score = weight(&goods, &v) / weight(&bads, &v);
                    if score > best.1 {
                        best = (v, score);
                    }
                }
                best.0
            }
            _ => {
                // Numeric: Parzen windows over the good and bad values, in the space where the
                // distribution is uniform or normal (log space for the log ones).
                let to_x = |v: &Json| {
                    v.as_f64().map(|x| match e {
                        Expr::LogUniform { .. } | Expr::LogNormal { .. } => x.max(1e-300).ln(),
                        _ => x,
                    })
                };
                let gx: Vec<f64> = goods.iter().filter_map(to_x).collect();
                let bx: Vec<f64> = bads.iter().filter_map(to_x).collect();
                let (lo, hi) = match e {
                    Expr::Uniform { min, max, .. } | Expr::LogUniform { min, max, .. } => {
                        (*min, *max)
                    }
                    Expr::RandInt { upper } => (0.0, *upper as f64),
                    Expr::Normal { mu, sigma, .. } | Expr::LogNormal { mu, sigma, .. } => {
                        (mu - 3.0 * sigma, mu + 3.0 * sigma)
                    }
                    Expr::Choice(_) => (0.0, 1.0),
                };
                // Narrower as good trials accumulate: exploit what worked, keep some spread.
                let bandwidth = ((hi - lo) * 0.25 / (gx.len() as f64).sqrt()).max(1e-12);
                let density = |xs: &[f64], x: f64| {
                    let prior = 1.0 / (hi - lo).max(1e-12);
                    let kernels: f64 = xs
                        .iter()
                        .map(|m| {
                            (-0.5 * ((x - m) / bandwidth).powi(2)).exp() / (bandwidth * 2.5066)
                        })
                        .sum();
                    (kernels + prior) / (xs.len() as f64 + 1.0)
                };
                let mut best = (lo, f64::MIN);
                for _ in 0..CANDIDATES {
                    let centre = gx[(rng.uniform() * gx.len() as f64) as usize % gx.len().max(1)];
                    let x = (centre + bandwidth * rng.normal()).clamp(lo, hi);
                    let score = density(&gx, x) / density(&bx, x);
                    if score > best.1 {
                        best = (x, score);
                    }
                }
                let x = best.0;
                match e {
                    Expr::RandInt { upper } => Json::from((x.floor() as i64).clamp(0, upper - 1)),
                    Expr::LogUniform { q, .. } | Expr::LogNormal { q, .. } => {
                        quantized(x.exp(), *q)
                    }
                    Expr::Uniform { q, .. } | Expr::Normal { q, .. } => quantized(x, *q),
                    Expr::Choice(_) => Json::Null,
                }
            }
        };
        point.push((name.clone(), value));
    }
    point
}

fn quantized(x: f64, q: Option<f64>) -> Json {
    let x = match q {
        Some(q) if q > 0.0 => (x / q).round() * q,
        _ => x,
    };
    serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
}

/// An early-termination policy, as Azure ML defines them.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    Bandit {
        slack_factor: Option<f64>,
        slack_amount: Option<f64>,
    },
    MedianStopping,
    TruncationSelection {
        percentage: f64,
    },
}

/// When a policy looks at the metrics: every `interval` reports, after `delay` reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub interval: u32,
    pub delay: u32,
}

impl Schedule {
    /// As in Azure ML: the first evaluation is at report `delay` (with `delay_evaluation: 5`,
    /// at the fifth), then every `interval` reports.
    pub fn applies_at(&self, report: u32) -> bool {
        report >= self.delay.max(1) && self.interval > 0 && report.is_multiple_of(self.interval)
    }
}

/// Which running trials to stop at report number `at`. `trials` are (trial id, the primary
/// metric's values so far, one per report, and whether the trial still runs).
pub fn to_terminate(
    policy: &Policy,
    schedule: Schedule,
    trials: &[(String, Vec<f64>, bool)],
    at: u32,
    maximize: bool,
) -> Vec<String> {
    if !schedule.applies_at(at) {
        return vec![];
    }
    let idx = at as usize - 1;
    let better = |a: f64, b: f64| if maximize { a > b } else { a < b };
    let at_report: Vec<(&str, f64, bool)> = trials
        .iter()
        .filter_map(|(id, values, running)| values.get(idx).map(|v| (id.as_str(), *v, *running)))
        .collect();
    if at_report.is_empty() {
        return vec![];
    }
    match policy {
        Policy::Bandit {
            slack_factor,
            slack_amount,
        } => {
            let best = at_report
                .iter()
                .map(|t| t.1)
                .fold(None, |acc: Option<f64>, v| match acc {
                    Some(b) if !better(v, b) => Some(b),
                    _ => Some(v),
                })
                .unwrap_or(0.0);
            let threshold = match (slack_factor, slack_amount, maximize) {
                (Some(f), _, true) => best / (1.0 + f),
                (Some(f), _, false) => best * (1.0 + f),
                (None, Some(a), true) => best - a,
                (None, Some(a), false) => best + a,
                (None, None, _) => best,
            };
            at_report
                .iter()
                .filter(|(_, v, running)| *running && better(threshold, *v))
                .map(|(id, _, _)| id.to_string())
                .collect()
        }
        Policy::MedianStopping => {
            // A trial's best so far against the median of all trials' running averages.
            let mut averages: Vec<f64> = trials
                .iter()
                .filter(|(_, v, _)| v.len() > idx)
                .map(|(_, v, _)| v[..=idx].iter().sum::<f64>() / (idx + 1) as f64)
                .collect();
            averages.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            let median = averages[averages.len() / 2];
            trials
                .iter()
                .filter(|(_, v, running)| *running && v.len() > idx)
                .filter(|(_, v, _)| {
                    let best = v[..=idx]
                        .iter()
                        .copied()
                        .fold(None, |acc: Option<f64>, x| match acc {
                            Some(b) if !better(x, b) => Some(b),
                            _ => Some(x),
                        })
                        .unwrap_or(median);
                    better(median, best)
                })
                .map(|(id, _, _)| id.clone())
                .collect()
        }
        Policy::TruncationSelection { percentage } => {
            let mut ranked = at_report.clone();
            // Worst first.
            ranked.sort_by(|a, b| {
                let o = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
                if maximize { o } else { o.reverse() }
            });
            let cut = ((ranked.len() as f64) * percentage / 100.0).floor() as usize;
            ranked
                .iter()
                .take(cut)
                .filter(|t| t.2)
                .map(|t| t.0.to_string())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn space() -> Vec<(String, Expr)> {
        vec![
            (
                "lr".into(),
                Expr::parse(&json!({"type": "loguniform", "min_value": -6, "max_value": -1}))
                    .unwrap(),
            ),
            (
                "depth".into(),
                Expr::parse(&json!({"type": "choice", "values": [2, 4, 8]})).unwrap(),
            ),
            (
                "units".into(),
                Expr::parse(
                    &json!({"type": "quniform", "min_value": 16, "max_value": 128, "q": 16}),
                )
                .unwrap(),
            ),
            (
                "n".into(),
                Expr::parse(&json!({"type": "randint", "upper": 5})).unwrap(),
            ),
        ]
    }

    #[test]
    fn random_points_stay_in_their_distributions_and_repeat_for_a_seed() {
        let s = space();
        let mut rng = Rng::new(42);
        for _ in 0..500 {
            let p = random_point(&s, &mut rng);
            let lr = p[0].1.as_f64().unwrap();
            assert!(((-6.0f64).exp()..=(-1.0f64).exp()).contains(&lr), "{lr}");
            assert!([2, 4, 8].contains(&p[1].1.as_i64().unwrap()));
            let units = p[2].1.as_f64().unwrap();
            assert!(
                (16.0..=128.0).contains(&units) && units % 16.0 == 0.0,
                "{units}"
            );
            assert!((0..5).contains(&p[3].1.as_i64().unwrap()));
        }
        let a = random_point(&s, &mut Rng::new(7));
        let b = random_point(&s, &mut Rng::new(7));
        assert_eq!(a, b, "the same seed gives the same trial");
        assert_ne!(a, random_point(&s, &mut Rng::new(8)));
    }

    /// Each coordinate of the first 2^k Sobol points falls once in each of 2^k equal bins
    /// (the stratification that makes Sobol better than random for small budgets).
    #[test]
    fn sobol_points_are_stratified_in_every_dimension() {
        for k in 1..=6u32 {
            let n = 1usize << k;
            for dim in 0..SOBOL_MAX_DIMENSIONS {
                let mut bins = vec![0; n];
                for i in 0..n as u64 {
                    let u = sobol(i, SOBOL_MAX_DIMENSIONS)[dim];
                    assert!((0.0..1.0).contains(&u));
                    bins[(u * n as f64) as usize] += 1;
                }
                assert!(
                    bins.iter().all(|&b| b == 1),
                    "dim {dim}, {n} points: {bins:?}"
                );
            }
        }
        let p = sobol_point(&space(), 0, 0).unwrap();
        assert_eq!(p.len(), 4);
        assert!((inverse_normal(0.975) - 1.959964).abs() < 1e-5);
    }

    #[test]
    fn a_grid_covers_exactly_its_choices() {
        let s = vec![
            ("a".to_string(), Expr::Choice(vec![json!(1), json!(2)])),
            (
                "b".to_string(),
                Expr::Choice(vec![json!("x"), json!("y"), json!("z")]),
            ),
        ];
        let g = grid(&s).unwrap();
        assert_eq!(g.len(), 6);
        let mut seen: Vec<String> = g.iter().map(|p| format!("{}{}", p[0].1, p[1].1)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 6);
        assert!(grid(&space()).unwrap_err().contains("lr is not a choice"));
    }

    /// A synthetic objective (minimum 0 at x = 0.3, y = 0.7, z = 0.5, c = "b"): with the same
    /// budget, the model-based sampler finds better points than random sampling, across seeds.
    #[test]
    fn tpe_beats_random_on_a_known_objective() {
        let u = || Expr::Uniform {
            min: 0.0,
            max: 1.0,
            q: None,
        };
        let s = vec![
            ("x".to_string(), u()),
            ("y".to_string(), u()),
            ("z".to_string(), u()),
            (
                "c".to_string(),
                Expr::Choice(vec![json!("a"), json!("b"), json!("c")]),
            ),
        ];
        let f = |p: &Point| {
            let v = |i: usize| p[i].1.as_f64().unwrap();
            let c = if p[3].1 == json!("b") { 0.0 } else { 0.3 };
            (v(0) - 0.3).powi(2) + (v(1) - 0.7).powi(2) + (v(2) - 0.5).powi(2) + c
        };
        let (mut tpe_wins, seeds) = (0, 10);
        for seed in 0..seeds {
            let run = |bayes: bool| {
                let mut rng = Rng::new(seed);
                let mut history: Vec<(Point, f64)> = vec![];
                for _ in 0..40 {
                    let p = if bayes {
                        tpe_point(&s, &history, false, &mut rng)
                    } else {
                        random_point(&s, &mut rng)
                    };
                    let v = f(&p);
                    history.push((p, v));
                }
                history.iter().map(|h| h.1).fold(f64::MAX, f64::min)
            };
            if run(true) < run(false) {
                tpe_wins += 1;
            }
        }
        assert!(
            tpe_wins >= 8,
            "TPE beat random in only {tpe_wins} of {seeds} seeds"
        );
    }

    #[test]
    fn early_termination_policies() {
        let every = Schedule {
            interval: 1,
            delay: 0,
        };
        let t = |id: &str, v: &[f64]| (id.to_string(), v.to_vec(), true);
        let trials = vec![
            t("good", &[0.9, 0.92]),
            t("ok", &[0.85, 0.9]),
            t("bad", &[0.5, 0.52]),
        ];
        let bandit = Policy::Bandit {
            slack_factor: Some(0.1),
            slack_amount: None,
        };
        assert_eq!(to_terminate(&bandit, every, &trials, 1, true), ["bad"]);
        let amount = Policy::Bandit {
            slack_factor: None,
            slack_amount: Some(0.03),
        };
        assert_eq!(
            to_terminate(&amount, every, &trials, 1, true),
            ["ok", "bad"]
        );
        // Minimizing a loss: the high ones go.
        let losses = vec![t("a", &[0.1]), t("b", &[0.5])];
        assert_eq!(to_terminate(&bandit, every, &losses, 1, false), ["b"]);
        assert_eq!(
            to_terminate(&Policy::MedianStopping, every, &trials, 2, true),
            ["bad"]
        );
        let trunc = Policy::TruncationSelection { percentage: 34.0 };
        assert_eq!(to_terminate(&trunc, every, &trials, 1, true), ["bad"]);
        // Not before delay_evaluation, only every evaluation_interval.
        let late = Schedule {
            interval: 2,
            delay: 2,
        };
        assert!(to_terminate(&bandit, late, &trials, 1, true).is_empty());
        assert_eq!(to_terminate(&bandit, late, &trials, 2, true), ["bad"]);
        let later = Schedule {
            interval: 2,
            delay: 3,
        };
        assert!(to_terminate(&bandit, later, &trials, 2, true).is_empty());
        // A finished trial is not terminated.
        let done = vec![t("good", &[0.9]), ("bad".to_string(), vec![0.1], false)];
        assert!(to_terminate(&bandit, every, &done, 1, true).is_empty());
    }
}
