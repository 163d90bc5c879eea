//! Smooth weighted round robin (the nginx algorithm): the deterministic way a
//! worker splits connections between a route's clusters. Over every run of
//! `sum(weights)` picks the split is exact (80/20 gives 4 of every 5 to the
//! first), and picks of the same cluster are spread out, not bunched.
//!
//! Pure: the data plane owns one picker per route per worker.

/// One picker over a fixed list of weights.
#[derive(Debug, Clone)]
pub struct SmoothWrr {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl SmoothWrr {
    /// `weights` must not be empty; zero weights are never picked.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> SmoothWrr {
        let weights: Vec<i64> = weights.into_iter().map(i64::from).collect();
        let total = weights.iter().sum();
        SmoothWrr {
            current: vec![0; weights.len()],
            weights,
            total,
        }
    }

    /// The index of the next pick. Each candidate gains its weight, the
    /// largest current value wins (the first on a tie) and pays the total.
    pub fn pick(&mut self) -> usize {
        if self.weights.len() <= 1 || self.total == 0 {
            return 0;
        }
        let mut best = 0;
        for i in 0..self.weights.len() {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        best
    }

    /// Like [`pick`](Self::pick), but skips candidates `usable` rejects; `None`
    /// when none is usable. The skipped candidates keep their credit, so the
    /// split among the usable ones stays smooth.
    pub fn pick_where(&mut self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let total: i64 = (0..self.weights.len())
            .filter(|i| usable(*i))
            .map(|i| self.weights[i])
            .sum();
        if total == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        for i in (0..self.weights.len()).filter(|i| usable(*i)) {
            self.current[i] += self.weights[i];
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            self.current[b] -= total;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(weights: &[u32], picks: usize) -> Vec<usize> {
        let mut wrr = SmoothWrr::new(weights.iter().copied());
        let mut counts = vec![0; weights.len()];
        for _ in 0..picks {
            counts[wrr.pick()] += 1;
        }
        counts
    }

    #[test]
    fn the_split_is_exact_over_every_sum_of_weights() {
        struct Case {
            weights: &'static [u32],
            picks: usize,
            want: &'static [usize],
        }
        let cases = [
            Case {
                weights: &[80, 20],
                picks: 5,
                want: &[4, 1],
            },
            Case {
                weights: &[80, 20],
                picks: 10,
                want: &[8, 2],
            },
            Case {
                weights: &[80, 20],
                picks: 100,
                want: &[80, 20],
            },
            Case {
                weights: &[1, 1, 1],
                picks: 3,
                want: &[1, 1, 1],
            },
            Case {
                weights: &[550, 500],
                picks: 1050,
                want: &[550, 500],
            },
            Case {
                weights: &[5, 0, 5],
                picks: 10,
                want: &[5, 0, 5],
            },
            Case {
                weights: &[7],
                picks: 3,
                want: &[3],
            },
        ];
        for case in cases {
            assert_eq!(
                counts(case.weights, case.picks),
                case.want,
                "weights {:?}",
                case.weights
            );
        }
    }

    #[test]
    fn picks_are_spread_not_bunched() {
        let mut wrr = SmoothWrr::new([80, 20]);
        let seq: Vec<usize> = (0..5).map(|_| wrr.pick()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 0]);
    }

    #[test]
    fn pick_where_skips_unusable_candidates() {
        let mut wrr = SmoothWrr::new([1, 1, 1]);
        let picks: Vec<Option<usize>> = (0..4).map(|_| wrr.pick_where(|i| i != 1)).collect();
        assert_eq!(picks, vec![Some(0), Some(2), Some(0), Some(2)]);
        assert_eq!(wrr.pick_where(|_| false), None);
    }
}
