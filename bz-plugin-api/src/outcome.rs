//! What a finished trial measured, as [`crate::TunerFfi::tell_json`] carries it (since 1.3.0): one value per
//! objective and one value per constraint, as JSON so later versions can add keys without touching the ABI.

use crate::PluginError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A trial's objective values (in the order of the study's metrics) and constraint values (each `c <= 0` means
/// the constraint holds, as Optuna's `constraints_func` returns them). A value that is not a number (a diverged
/// loss) travels as JSON `null` and comes back as NaN.
///
/// ```
/// use bz_plugin_api::outcome::TrialOutcome;
/// let o = TrialOutcome { values: vec![0.25, f64::NAN], constraints: vec![-0.1] };
/// let json = o.to_json();
/// assert_eq!(json, r#"{"values":[0.25,null],"constraints":[-0.1]}"#);
/// let back = TrialOutcome::from_json(&json).unwrap();
/// assert_eq!(back.values[0], 0.25);
/// assert!(back.values[1].is_nan());
/// // Unknown keys (from a newer bz) are ignored.
/// assert!(TrialOutcome::from_json(r#"{"values":[1.0],"later":true}"#).is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrialOutcome {
    #[serde(default, serialize_with = "nan_as_null", deserialize_with = "null_as_nan")]
    pub values: Vec<f64>,
    #[serde(default, serialize_with = "nan_as_null", deserialize_with = "null_as_nan")]
    pub constraints: Vec<f64>,
}

impl TrialOutcome {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn from_json(text: &str) -> Result<TrialOutcome, PluginError> {
        serde_json::from_str(text).map_err(|e| PluginError::other(format!("a trial outcome that is not valid JSON ({e}): {text}")))
    }

    /// The single value a 1.2 tuner's `tell` takes, if this outcome is one objective without constraints.
    ///
    /// ```
    /// use bz_plugin_api::outcome::TrialOutcome;
    /// assert_eq!(TrialOutcome { values: vec![0.5], constraints: vec![] }.single(), Ok(Some(0.5)));
    /// assert_eq!(TrialOutcome::default().single(), Ok(None));
    /// assert!(TrialOutcome { values: vec![0.5, 1.0], constraints: vec![] }.single().is_err());
    /// ```
    pub fn single(&self) -> Result<Option<f64>, String> {
        if self.values.len() > 1 || !self.constraints.is_empty() {
            return Err(format!(
                "the tuner plugin takes one objective and no constraints (it was built against bz-plugin-api older than 1.3.0), but the study has {} objectives and {} constraints: update the plugin",
                self.values.len(),
                self.constraints.len()
            ));
        }
        Ok(self.values.first().copied().filter(|v| !v.is_nan()))
    }
}

fn nan_as_null<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
}

fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}
