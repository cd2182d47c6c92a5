//! The coordinator's configuration ([`CoordinatorConfig`]) and its checks
//! before a machine is built. It does not own the run's parameters (see
//! [`crate::wire::RunParams`]) or the hospitals' own policies.

use super::*;

/// Configuration of a coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Id of the run (a resumed machine takes the checkpoint's instead).
    pub run_id: RunId,
    /// This node's name, [`DEFAULT_COORDINATOR_NAME`] by default.
    pub name: String,
    /// The hospitals, in ring order, with their default addresses.
    pub roster: Vec<Member>,
    /// Hyper-parameters sent to the hospitals.
    pub params: RunParams,
    /// The consortium schema every hospital's data follow (its hash is
    /// `params.schema`); `None`: hospitals train on their columns as given.
    pub consortium: Option<ConsortiumSchema>,
    /// Fewest hospitals to run with; never below [`MIN_HOSPITALS`] (default 3).
    pub min_hospitals: usize,
    /// How long to wait for the whole roster before starting with those present
    /// (default 120 s).
    pub join_timeout: Duration,
    /// Deadline of each round phase (passing the sum, acknowledging; default 60 s).
    pub round_timeout: Duration,
    /// Attempts per round before the run fails (default 5).
    pub max_attempts: u32,
    /// Most feature columns a hospital may announce (the driver sizes its
    /// message limits by it; a wider hospital is refused at join rather than
    /// having its ring passes refused later). Default: no bound.
    pub max_features: Option<usize>,
}

impl CoordinatorConfig {
    /// A configuration with the default name, minimum and timeouts.
    pub fn new(run_id: RunId, roster: Vec<Member>, params: RunParams) -> CoordinatorConfig {
        CoordinatorConfig {
            run_id,
            name: DEFAULT_COORDINATOR_NAME.to_owned(),
            roster,
            params,
            consortium: None,
            min_hospitals: MIN_HOSPITALS,
            join_timeout: Duration::from_secs(120),
            round_timeout: Duration::from_secs(60),
            max_attempts: 5,
            max_features: None,
        }
    }
}

pub(super) fn validate_config(config: &CoordinatorConfig, sk: &RunKey) -> Result<()> {
    let p = &config.params;
    if config.min_hospitals < MIN_HOSPITALS {
        return Err(Error::Config(format!(
            "min_hospitals {} is below {MIN_HOSPITALS}: with two hospitals each learns \
             the other's gradient from the aggregate",
            config.min_hospitals
        )));
    }
    let mut seen = BTreeSet::new();
    for m in &config.roster {
        if m.name.is_empty() || m.name == config.name || !seen.insert(m.name.as_str()) {
            return Err(Error::Config(format!(
                "roster name {:?} is empty, repeated or the coordinator's own",
                m.name
            )));
        }
    }
    if config.roster.len() < config.min_hospitals {
        return Err(Error::TooFewHospitals {
            available: config.roster.len(),
            min: config.min_hospitals,
            missing: Vec::new(),
            reasons: Vec::new(),
        });
    }
    if !(p.eta.is_finite() && p.eta > 0.0) {
        return Err(Error::Config(format!(
            "eta {} is not a positive finite number",
            p.eta
        )));
    }
    match &config.consortium {
        Some(c) => {
            if p.schema.as_deref() != Some(c.hash_hex().as_str()) {
                return Err(Error::Config(format!(
                    "the run's schema hash {:?} is not the consortium schema's {}",
                    p.schema,
                    c.hash_hex()
                )));
            }
            if p.statistics != c.needs_statistics() {
                return Err(Error::Config(if p.statistics {
                    "a statistics step is configured, but the schema neither scales nor imputes"
                        .into()
                } else {
                    "the schema scales or imputes, so the run needs its statistics step".into()
                }));
            }
        }
        None if p.schema.is_some() || p.statistics => {
            return Err(Error::Config(
                "the run names a schema hash or a statistics step but no consortium schema \
                 is configured"
                    .into(),
            ))
        }
        None => {}
    }
    if !(p.l2.is_finite() && p.l2 >= 0.0) {
        return Err(Error::Config(format!(
            "l2 {} is not a non-negative finite number",
            p.l2
        )));
    }
    if let Some(t) = p.tolerance {
        if !(t.is_finite() && t > 0.0) {
            return Err(Error::Config(format!(
                "tolerance {t} is not a positive finite number"
            )));
        }
        if p.mode != learning::Mode::Global {
            return Err(Error::Config(
                "a tolerance needs global mode (seed mode's weights differ per hospital)".into(),
            ));
        }
    }
    if (config.roster.len() as u64) > p.fixed_point.max_addends {
        return Err(Error::Config(format!(
            "{} hospitals exceed the fixed-point encoding's max_addends {}",
            config.roster.len(),
            p.fixed_point.max_addends
        )));
    }
    if config.max_attempts == 0 {
        return Err(Error::Config("max_attempts must be at least 1".into()));
    }
    if let Some(t) = sk.threshold() {
        if !p.masks {
            return Err(Error::Config(
                "threshold keys need masks: members decrypt only the sum they agreed on while \
                 committing to its member set"
                    .into(),
            ));
        }
        if let Some(m) = config.roster.iter().find(|m| t.index_of(&m.name).is_none()) {
            return Err(Error::Config(format!(
                "roster hospital {:?} holds no share of the threshold key (its parties: {:?})",
                m.name,
                t.parties()
            )));
        }
        if (t.threshold() as usize) > config.roster.len() {
            return Err(Error::Config(format!(
                "the threshold key needs {} partial decryptions, the roster has {} hospitals",
                t.threshold(),
                config.roster.len()
            )));
        }
    }
    // Fails early if the encoding does not fit the key at all.
    GradientCodec::new(sk.public_key(), p.fixed_point, p.pack, 1)?;
    if p.statistics || p.evaluate {
        let plan = crate::plan::Plan::new(p, 1, 3, None);
        let wide = plan.fixed_point(crate::plan::StepKind::Statistics);
        GradientCodec::new(sk.public_key(), wide, p.pack, 1)?;
    }
    Ok(())
}
