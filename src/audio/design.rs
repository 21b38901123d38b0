//! Linear-phase low-pass FIR design used once at start-up by the resamplers.
//!
//! A windowed sinc spends its length on stopband attenuation far past the first sidelobe and on
//! a passband flatter than needed. A (near) minimax design spreads the error evenly instead, which
//! is what lets 127 taps at 24 kHz (2.625 ms of delay) keep 0–3.4 kHz within ±0.03 dB and reject
//! everything from 4 kHz by ≥ 66 dB; a Kaiser window needs ~160 taps (> 3 ms) for the same edges.
//! The design is Lawson's iteratively reweighted least squares, which converges to the Chebyshev
//! (equiripple) solution without the bookkeeping of a Remez exchange.

use std::f64::consts::PI;

/// What a low-pass filter must achieve; frequencies in Hz.
#[derive(Debug, Clone, Copy)]
pub struct LowPassSpec {
    /// Sample rate the filter runs at.
    pub sample_rate: f64,
    /// Upper edge of the band passed at unity gain.
    pub pass_edge: f64,
    /// Lower edge of the band to be rejected (up to Nyquist).
    pub stop_edge: f64,
    /// Stopband error weight relative to passband error (≈ passband ripple / stopband ripple).
    pub stop_weight: f64,
    /// Half-length: the filter has `2 * half_len + 1` taps and `half_len` samples of delay.
    pub half_len: usize,
}

/// Lawson iterations; the design is converged to within 0.01 dB well before this.
const ITERATIONS: usize = 40;
/// Grid points per cosine coefficient over [0, π].
const GRID_DENSITY: f64 = 20.0;

/// Designs a symmetric (type I) low-pass FIR with unity passband gain.
pub fn design_low_pass(spec: &LowPassSpec) -> Vec<f64> {
    let m = spec.half_len.max(1);
    let wp = 2.0 * PI * spec.pass_edge / spec.sample_rate;
    let ws = 2.0 * PI * spec.stop_edge / spec.sample_rate;
    let step = PI / (GRID_DENSITY * m as f64);

    // (ω, desired, weight) over the passband and the stopband; the transition band is free.
    let mut grid: Vec<(f64, f64, f64)> = Vec::new();
    let np = ((wp / step).ceil() as usize).max(1);
    grid.extend((0..=np).map(|i| (wp * i as f64 / np as f64, 1.0, 1.0)));
    let ns = (((PI - ws) / step).ceil() as usize).max(1);
    grid.extend((0..=ns).map(|i| (ws + (PI - ws) * i as f64 / ns as f64, 0.0, spec.stop_weight)));

    let mut lawson = vec![1.0 / grid.len() as f64; grid.len()];
    let mut coeffs = vec![0.0; m + 1];
    let mut cos_k = vec![0.0; 2 * m + 1];
    for _ in 0..ITERATIONS {
        // Normal equations of the weighted least-squares fit of Σ a_k cos(kω). The Gram matrix
        // is Toeplitz-plus-Hankel in the moments s[d] = Σ c_i cos(d ω_i), which keeps each
        // iteration O(grid · m) instead of O(grid · m²).
        let mut s = vec![0.0; 2 * m + 1];
        let mut rhs = vec![0.0; m + 1];
        for (&(w, desired, weight), &v) in grid.iter().zip(&lawson) {
            let c = v * weight * weight;
            cosines(w, &mut cos_k);
            for (acc, ck) in s.iter_mut().zip(&cos_k) {
                *acc += c * ck;
            }
            if desired != 0.0 {
                for (acc, ck) in rhs.iter_mut().zip(&cos_k) {
                    *acc += c * desired * ck;
                }
            }
        }
        let gram: Vec<Vec<f64>> = (0..=m)
            .map(|j| {
                (0..=m)
                    .map(|k| 0.5 * (s[j.abs_diff(k)] + s[j + k]))
                    .collect()
            })
            .collect();
        coeffs = solve(gram, rhs);

        // Lawson's update: weight each point by its current error so the peaks dominate.
        let mut total = 0.0;
        for (&(w, desired, weight), v) in grid.iter().zip(lawson.iter_mut()) {
            cosines(w, &mut cos_k);
            let amp: f64 = coeffs.iter().zip(&cos_k).map(|(a, c)| a * c).sum();
            *v *= (weight * (amp - desired)).abs();
            total += *v;
        }
        if !(total > 0.0 && total.is_finite()) {
            break;
        }
        lawson.iter_mut().for_each(|v| *v /= total);
    }

    let mut taps = vec![0.0; 2 * m + 1];
    taps[m] = coeffs[0];
    for k in 1..=m {
        taps[m + k] = coeffs[k] / 2.0;
        taps[m - k] = coeffs[k] / 2.0;
    }
    taps
}

/// cos(kω) for k = 0.. by the Chebyshev recurrence.
fn cosines(w: f64, out: &mut [f64]) {
    let c1 = w.cos();
    let (mut prev, mut cur) = (c1, 1.0); // cos(-ω), cos(0)
    for slot in out.iter_mut() {
        *slot = cur;
        let next = 2.0 * c1 * cur - prev;
        prev = cur;
        cur = next;
    }
}

/// Gaussian elimination with partial pivoting; the systems here are small (≤ ~60 unknowns).
pub(crate) fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let p = a[col][col];
        if p == 0.0 {
            continue;
        }
        for row in col + 1..n {
            let (top, bottom) = a.split_at_mut(row);
            let (pivot_row, target) = (&top[col], &mut bottom[0]);
            let f = target[col] / p;
            if f == 0.0 {
                continue;
            }
            for (t, &v) in target[col..].iter_mut().zip(&pivot_row[col..]) {
                *t -= f * v;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for col in (0..n).rev() {
        let s: f64 = b[col] - (col + 1..n).map(|k| a[col][k] * x[k]).sum::<f64>();
        x[col] = if a[col][col] == 0.0 {
            0.0
        } else {
            s / a[col][col]
        };
    }
    x
}

/// Magnitude of the filter's frequency response at `freq` (same unit as `sample_rate`).
#[cfg(test)]
pub fn magnitude(taps: &[f64], freq: f64, sample_rate: f64) -> f64 {
    let w = 2.0 * PI * freq / sample_rate;
    let (re, im) = taps
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(re, im), (n, &t)| {
            let phase = w * n as f64;
            (re + t * phase.cos(), im - t * phase.sin())
        });
    re.hypot(im)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solver_solves() {
        let x = solve(vec![vec![0.0, 2.0], vec![3.0, 1.0]], vec![4.0, 5.0]);
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 2.0).abs() < 1e-12);
    }

    #[test]
    fn small_design_is_symmetric_low_pass() {
        let spec = LowPassSpec {
            sample_rate: 8000.0,
            pass_edge: 1000.0,
            stop_edge: 2000.0,
            stop_weight: 10.0,
            half_len: 10,
        };
        let taps = design_low_pass(&spec);
        assert_eq!(taps.len(), 21);
        for k in 0..10 {
            assert_eq!(taps[k], taps[20 - k]);
        }
        assert!((magnitude(&taps, 0.0, 8000.0) - 1.0).abs() < 0.1);
        assert!(magnitude(&taps, 500.0, 8000.0) > 0.9);
        assert!(magnitude(&taps, 3000.0, 8000.0) < 0.01);
    }
}
