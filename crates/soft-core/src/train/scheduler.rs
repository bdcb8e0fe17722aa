//! The self-adaptive curriculum of SOFT: how much of the loss comes from the distilled targets.
//!
//! lambda_t = min(exp(alpha * (d_t / d_0 - 1)), 1), where d_t is the mean L2 distance between
//! the embedding of the model's generated answer and that of the true item (measured before
//! training: d_0, and after each epoch). As the model nears the real targets (d_t < d_0),
//! lambda falls from 1 toward 0 and training moves from the easy distilled data to the real one.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How lambda is set for each epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Schedule {
    /// The paper's self-adaptive schedule.
    Adaptive,
    /// lambda = 1 throughout: the "SOFT without SA" ablation.
    DistilledOnly,
    /// lambda = 0 throughout: plain fine-tuning on the real targets.
    RealOnly,
    /// A fixed ramp from 1 (first epoch) to 0 (last), to show what adaptivity adds.
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    pub schedule: Schedule,
    pub alpha: f64,
    pub d0: f64,
}

/// The curriculum's pace when none is given: the reference's.
pub const DEFAULT_ALPHA: f64 = 1.0;

/// `alpha` when it can scale the schedule (finite, >= 0): checked before any work is done.
pub fn validate_alpha(alpha: f64) -> Result<f64> {
    if !alpha.is_finite() || alpha < 0.0 {
        return Err(Error::config("alpha", format!("must be a finite number >= 0, got {alpha}")));
    }
    Ok(alpha)
}

impl Scheduler {
    /// `d0` is measured (the base model's distance), so a bad one is an input error.
    pub fn new(schedule: Schedule, alpha: f64, d0: f64) -> Result<Self> {
        let alpha = validate_alpha(alpha)?;
        if !d0.is_finite() || d0 <= 0.0 {
            return Err(Error::Input(format!("d0 must be a finite positive distance, got {d0}")));
        }
        Ok(Self { schedule, alpha, d0 })
    }

    /// The paper's formula for a measured distance.
    pub fn adaptive_lambda(&self, d: f64) -> f64 {
        (self.alpha * (d / self.d0 - 1.0)).exp().min(1.0)
    }

    /// lambda for epoch `epoch` (1-based) of `epochs`, given the distance measured at the end of
    /// the previous epoch (`d0` before the first).
    pub fn lambda(&self, epoch: usize, epochs: usize, d_prev: f64) -> f64 {
        match self.schedule {
            Schedule::Adaptive => self.adaptive_lambda(d_prev),
            Schedule::DistilledOnly => 1.0,
            Schedule::RealOnly => 0.0,
            Schedule::Linear if epochs <= 1 => 1.0,
            Schedule::Linear => 1.0 - (epoch - 1) as f64 / (epochs - 1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_and_clamp() {
        let s = Scheduler::new(Schedule::Adaptive, 1.0, 2.0).unwrap();
        assert_eq!(s.lambda(1, 5, 2.0), 1.0); // epoch 1 uses d0: lambda = 1
        assert!((s.adaptive_lambda(1.0) - (-0.5f64).exp()).abs() < 1e-12);
        assert_eq!(s.adaptive_lambda(3.0), 1.0); // further than d0: clamped
        let sharp = Scheduler::new(Schedule::Adaptive, 10.0, 2.0).unwrap();
        assert!((sharp.adaptive_lambda(1.8) - (-1.0f64).exp()).abs() < 1e-12);
        assert!(sharp.adaptive_lambda(1.8) < s.adaptive_lambda(1.8));
    }

    #[test]
    fn fixed_schedules() {
        let lin = Scheduler::new(Schedule::Linear, 1.0, 1.0).unwrap();
        let ramp: Vec<f64> = (1..=5).map(|e| lin.lambda(e, 5, 0.1)).collect();
        assert_eq!(ramp, vec![1.0, 0.75, 0.5, 0.25, 0.0]);
        assert_eq!(Scheduler::new(Schedule::DistilledOnly, 1.0, 1.0).unwrap().lambda(3, 5, 0.1), 1.0);
        assert_eq!(Scheduler::new(Schedule::RealOnly, 1.0, 1.0).unwrap().lambda(1, 5, 9.0), 0.0);
    }

    #[test]
    fn rejects_bad_alpha_and_d0() {
        for a in [f64::NAN, f64::INFINITY, -1.0] {
            assert!(Scheduler::new(Schedule::Adaptive, a, 1.0).unwrap_err().to_string().contains("alpha"));
            assert!(validate_alpha(a).is_err());
        }
        assert_eq!(validate_alpha(0.5).unwrap(), 0.5);
        assert!(Scheduler::new(Schedule::Adaptive, 1.0, 0.0).is_err());
    }
}
