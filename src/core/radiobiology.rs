//! Linear-quadratic radiobiology (clinical spec §5): EQD2 summed over phases.

use super::plan::Phase;

/// Equivalent dose in 2 Gy fractions in Gy: Σ n·d·(d + α/β)/(2 + α/β).
pub fn eqd2_gy(phases: &[Phase], alpha_beta_gy: f64) -> f64 {
    phases
        .iter()
        .map(|phase| {
            phase.dose_gy() * (phase.dose_per_fraction_gy + alpha_beta_gy) / (2.0 + alpha_beta_gy)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::PhaseKind;

    fn single(dose_per_fraction_gy: f64, fractions: u32) -> [Phase; 1] {
        [Phase {
            kind: PhaseKind::Initial,
            dose_per_fraction_gy,
            fractions,
        }]
    }

    #[test]
    fn spec_examples() {
        let close = |a: f64, b: f64| (a - b).abs() < 0.005;
        assert!(close(eqd2_gy(&single(2.5, 20), 4.0), 54.17));
        assert!(close(eqd2_gy(&single(2.5, 20), 3.0), 55.0));
        assert!(close(eqd2_gy(&single(1.8, 28), 4.0), 48.72));
        assert!(close(eqd2_gy(&single(1.8, 28), 3.0), 48.38));
        assert!(close(eqd2_gy(&single(1.8, 25), 4.0), 43.5));
        assert!(close(eqd2_gy(&single(1.8, 25), 3.0), 43.2));
        assert!(close(eqd2_gy(&single(2.0, 30), 4.0), 60.0));
    }

    #[test]
    fn phases_add_up() {
        let phases = [
            Phase {
                kind: PhaseKind::Initial,
                dose_per_fraction_gy: 1.8,
                fractions: 28,
            },
            Phase {
                kind: PhaseKind::Boost,
                dose_per_fraction_gy: 2.0,
                fractions: 5,
            },
        ];
        assert!((eqd2_gy(&phases, 4.0) - 58.72).abs() < 0.005);
        assert!((eqd2_gy(&phases, 3.0) - 58.38).abs() < 0.005);
    }
}
